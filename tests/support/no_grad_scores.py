"""Token probabilities of rows from a no-gradient pass, to compare with what the trainer reported."""

from __future__ import annotations

import math

import torch

from cut.batches import collate
from cut.config import CutConfig
from cut.logprobs import autocast_for, response_logprobs
from cut.objective import cut_loss
from cut.batches import TokenRow
from cut.scoring import RowScore, row_scores


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


def mean_nll(scores: list[RowScore]) -> float:
    """L2 of the rows: mean −log p over every response token under the aligned contexts."""
    values = [-math.log(max(p, 1e-45)) for s in scores for p in s.p_aligned]
    return sum(values) / len(values)
