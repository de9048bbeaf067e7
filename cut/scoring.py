"""Per-token probabilities of token rows and which tokens CUT flags: read off a training forward
pass (`row_scores`, what the trainer reports) or from a no-gradient pass (`score_rows`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from cut.batches import collate
from cut.config import CutConfig
from cut.logprobs import autocast_for, response_logprobs
from cut.objective import cut_loss
from cut.rows import TokenRow


@dataclass(frozen=True)
class RowScore:
    triple_index: int
    p_aligned: list[float]  # per response token, under the aligned context
    p_misaligned: list[float] | None  # under the Misalign context (Align-N rows only)
    flagged: list[int]  # response token indices with p_aligned > λ·p_misaligned


@dataclass(frozen=True)
class FlaggedToken:
    index: int  # position in the response's token ids
    token: str
    p_aligned: float
    p_misaligned: float


def score_rows(model: torch.nn.Module, rows: list[TokenRow], config: CutConfig, pad_id: int) -> list[RowScore]:
    """Probabilities of every response token, in eval mode (no dropout), micro-batch by micro-batch."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(rows), config.micro_batch_size):
            batch = collate(rows[start : start + config.micro_batch_size], pad_id).to(device)
            with autocast_for(device, config.precision):
                logp_al, logp_mis = response_logprobs(model, batch, config.logit_chunk_tokens)
            flagged = cut_loss(logp_al, logp_mis, batch.mask, batch.negative, lam=config.lam).flagged
            scores.extend(row_scores(batch.rows, logp_al, logp_mis, flagged))
    model.train(was_training)
    return scores


def row_scores(rows: list[TokenRow], logp_aligned: torch.Tensor, logp_misaligned: torch.Tensor,
               flagged: torch.Tensor) -> list[RowScore]:
    """Each row's token probabilities and flags from a batch's [B, T] log-probs and flag mask."""
    logp_aligned, logp_misaligned = logp_aligned.detach().float(), logp_misaligned.detach().float()
    scores = []
    for b, row in enumerate(rows):
        p_al = logp_aligned[b, : row.response_len].exp().tolist()
        p_mis = logp_misaligned[b, : row.response_len].exp().tolist() if row.negative else None
        scores.append(RowScore(row.triple_index, p_al, p_mis, flagged[b].nonzero().flatten().tolist()))
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


def mean_nll(scores: list[RowScore]) -> float:
    """L2 of the rows: mean −log p over every response token under the aligned contexts."""
    values = [-math.log(max(p, 1e-45)) for s in scores for p in s.p_aligned]
    return sum(values) / len(values)
