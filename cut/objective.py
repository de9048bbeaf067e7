"""The CUT objective on per-token log-probabilities (docs/architecture.md, "The objective").

Inputs are the log-probabilities of the response tokens y_t, already gathered at the label
ids, so nothing here ever sees a vocabulary-sized tensor:

- L2 = mean over every response token of every row of −log p_aligned(y_t)
- L1 = mean over response tokens of Align-N rows of
  −α·log(1 − p_mis(y_t)) if the token is flagged, else −log p_mis(y_t)
- flagged: p_aligned(y_t) > λ·p_mis(y_t) on Align-N rows, decided without gradient (the paper's
  contrast detection, `contrast_flags`), unless the caller passes its own flags (`cut.detection`:
  the tokens a judge's spans cover, or either)
- loss = L1 + L2

`flag_weights` (float [B, T], `cut.severity_weights`) multiplies α token by token: a span of a
minor error can push less than one of a critical error.

With `unflagged_mle=False` the unflagged tokens of Align-N rows get no Misalign term at all
(L1 is then the unlikelihood term alone, still averaged over every Align-N token).

`reduction` says how tokens and rows weigh (`cut.reduction`):

- token: the means above run over the flat set of masked tokens of the batch
- example: the official repository's weighting (wwxu21/CUT, micro_batch_size=1): token means
  per row; an Align-N row contributes (L2_row + L1_row) / 2, an Align-P row L2_row; the loss
  is the mean over rows, and `l1`, `l2` report the per-row means (over Align-N rows for l1)

The baselines (`sft`, `hindsight`) call the same function with no Align-N row, which leaves
loss = L2 under either reduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class CutLoss:
    loss: torch.Tensor  # scalar: l1 + l2 (reduction token); the mean of the rows' losses (example)
    l1: torch.Tensor  # scalar: the Misalign term (0 without Align-N rows)
    l2: torch.Tensor  # scalar: MLE on the aligned contexts
    flagged: torch.Tensor  # bool [B, T]: tokens that get the unlikelihood term


def neg_log1mexp(logp: torch.Tensor) -> torch.Tensor:
    """−log(1 − p) from log p, stable for p → 1 (a p that rounds to 1 gives a large finite value)."""
    tiny = torch.finfo(logp.dtype).tiny
    return -torch.log(-torch.expm1(logp.clamp(max=-tiny)))


def _masked_mean(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the True entries of `where`; 0 (still on the graph) when there are none."""
    total = torch.where(where, values, torch.zeros_like(values)).sum()
    return total / where.sum().clamp(min=1)


def _row_means(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """[B]: each row's mean of `values` over its True entries of `where` (0 for a row with none)."""
    total = torch.where(where, values, torch.zeros_like(values)).sum(dim=1)
    return total / where.sum(dim=1).clamp(min=1)


def contrast_flags(
    logp_aligned: torch.Tensor, logp_misaligned: torch.Tensor, mask: torch.Tensor, negative: torch.Tensor, lam: float
) -> torch.Tensor:
    """bool [B, T]: response tokens of Align-N rows with p_aligned(y_t) > λ·p_mis(y_t) (no gradient)."""
    with torch.no_grad():
        return mask & negative.unsqueeze(1) & (logp_aligned.detach() > math.log(lam) + logp_misaligned.detach())


def cut_loss(
    logp_aligned: torch.Tensor,
    logp_misaligned: torch.Tensor,
    mask: torch.Tensor,
    negative: torch.Tensor,
    lam: float = 1.1,
    alpha: float = 1.0,
    reduction: Literal["token", "example"] = "token",
    flagged: torch.Tensor | None = None,
    unflagged_mle: bool = True,
    flag_weights: torch.Tensor | None = None,
) -> CutLoss:
    """CUT loss from [B, T] log-probs of y_t under the aligned and misaligned contexts.

    `mask` (bool [B, T]) marks response tokens, `negative` (bool [B]) marks Align-N rows;
    `logp_misaligned` is only read on Align-N rows. `flagged` (bool [B, T]) replaces the contrast
    flags where given (only its Align-N response tokens count); `flag_weights` (float [B, T]) multiplies α
    on each flagged token where given.
    """
    negative_tokens = mask & negative.unsqueeze(1)
    if flagged is None:
        flagged = contrast_flags(logp_aligned, logp_misaligned, mask, negative, lam)
    flagged = flagged & negative_tokens

    # Feed a harmless value where the unlikelihood term is not used, so its gradient there is 0, not NaN.
    unlikely_input = torch.where(flagged, logp_misaligned, torch.full_like(logp_misaligned, -1.0))
    unflagged_terms = -logp_misaligned if unflagged_mle else torch.zeros_like(logp_misaligned)
    unlikely_weight = alpha if flag_weights is None else alpha * flag_weights
    misalign_terms = torch.where(flagged, unlikely_weight * neg_log1mexp(unlikely_input), unflagged_terms)
    if reduction == "token":
        l2 = _masked_mean(-logp_aligned, mask)
        l1 = _masked_mean(misalign_terms, negative_tokens)
        return CutLoss(loss=l1 + l2, l1=l1, l2=l2, flagged=flagged)
    if reduction != "example":
        raise ValueError(f"reduction {reduction!r}: choose token or example")
    l2_rows = _row_means(-logp_aligned, mask)
    l1_rows = _row_means(misalign_terms, negative_tokens)
    row_loss = torch.where(negative, (l2_rows + l1_rows) / 2, l2_rows)
    rows = mask.any(dim=1)
    loss = _masked_mean(row_loss, rows)
    return CutLoss(loss=loss, l1=_masked_mean(l1_rows, rows & negative), l2=_masked_mean(l2_rows, rows), flagged=flagged)
