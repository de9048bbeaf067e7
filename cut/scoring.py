"""Per-token probabilities of token rows and which tokens CUT flags, read off a training forward
pass (`row_scores`, what the trainer reports)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from cut.batches import TokenRow


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
