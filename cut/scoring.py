"""Per-token probabilities of token rows and which tokens CUT flags, read off a training forward
pass (`row_scores`, what the trainer reports) or a pass without gradient (`score_rows`, what
`online-cut check-detection` reads before any training)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from cut.batches import TokenRow, collate
from cut.config import CutConfig
from cut.logprobs import autocast_for, response_logprobs
from cut.objective import contrast_flags


@dataclass(frozen=True)
class RowScore:
    triple_index: int
    p_aligned: list[float]  # per response token, under the aligned context
    p_misaligned: list[float] | None  # under the Misalign context (Align-N rows only)
    flagged: list[int]  # response token indices the unlikelihood term pushed down (`cut.detection`)
    contrast: list[int] = field(default_factory=list)  # those with p_aligned > λ·p_misaligned (the paper's test)


@dataclass(frozen=True)
class FlaggedToken:
    index: int  # position in the response's token ids
    token: str
    p_aligned: float
    p_misaligned: float


def row_scores(rows: list[TokenRow], logp_aligned: torch.Tensor, logp_misaligned: torch.Tensor,
               flagged: torch.Tensor, contrast: torch.Tensor | None = None) -> list[RowScore]:
    """Each row's token probabilities and flags from a batch's [B, T] log-probs and flag masks (`contrast`:
    the paper's flags, where they differ from the ones trained)."""
    contrast = flagged if contrast is None else contrast
    logp_aligned, logp_misaligned = logp_aligned.detach().float(), logp_misaligned.detach().float()
    scores = []
    for b, row in enumerate(rows):
        p_al = logp_aligned[b, : row.response_len].exp().tolist()
        p_mis = logp_misaligned[b, : row.response_len].exp().tolist() if row.negative else None
        scores.append(RowScore(row.triple_index, p_al, p_mis, flagged[b].nonzero().flatten().tolist(),
                               contrast[b].nonzero().flatten().tolist()))
    return scores


def flagged_tokens(
    scores: list[RowScore], rows: list[TokenRow], tokenizer: PreTrainedTokenizerBase
) -> dict[int, list[FlaggedToken]]:
    """Flagged tokens of each Align-N triple (keyed by triple index), with their text and probabilities."""
    found = {}
    for score, row in zip(scores, rows, strict=True):
        if score.p_misaligned is None:
            continue
        ids = row.response_ids
        found[score.triple_index] = [
            FlaggedToken(t, tokenizer.decode([ids[t]]), score.p_aligned[t], score.p_misaligned[t])
            for t in score.flagged
        ]
    return found


@dataclass(frozen=True)
class Detection:
    """How well the paper's contrast test finds the tokens a judge's spans blame, over the Align-N rows whose
    judgment located a span (each row once, as first visited), micro-averaged over tokens."""

    rows: int
    span_tokens: int  # tokens a span covers
    contrast_flagged: int  # tokens the contrast flagged
    flagged_in_spans: int  # tokens in a span that the contrast flagged

    @property
    def precision(self) -> float | None:
        return self.flagged_in_spans / self.contrast_flagged if self.contrast_flagged else None

    @property
    def recall(self) -> float | None:
        return self.flagged_in_spans / self.span_tokens if self.span_tokens else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)


def detection(scores: list[RowScore], rows: list[TokenRow]) -> Detection | None:
    """The contrast flags against the span tokens of `rows` (None: no row has a located span)."""
    judged = [(score, set(row.blamed)) for score, row in zip(scores, rows, strict=True)
              if row.negative and row.blamed is not None]
    if not judged:
        return None
    return Detection(
        rows=len(judged),
        span_tokens=sum(len(blamed) for _, blamed in judged),
        contrast_flagged=sum(len(score.contrast) for score, _ in judged),
        flagged_in_spans=sum(len(blamed.intersection(score.contrast)) for score, blamed in judged),
    )


def score_rows(model: torch.nn.Module, rows: list[TokenRow], config: CutConfig, pad_id: int,
               progress: Callable[[int], None] | None = None) -> list[RowScore]:
    """Probabilities of every response token and the contrast flags, in eval mode (no dropout), micro-batch by
    micro-batch; `progress` is told how many rows each finished."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(rows), config.micro_batch_size):
            batch = collate(rows[start : start + config.micro_batch_size], pad_id).to(device)
            with autocast_for(device, config.precision):
                logp_al, logp_mis = response_logprobs(model, batch, config.logit_chunk_tokens)
            flagged = contrast_flags(logp_al, logp_mis, batch.mask, batch.negative, config.lam)
            scores.extend(row_scores(batch.rows, logp_al, logp_mis, flagged))
            if progress is not None:
                progress(len(batch.rows))
    model.train(was_training)
    return scores
