"""DPO against the round's input adapter: the sigmoid loss on sequence log-probs, and the pieces
the trainer needs to compute them (pair rows, the reference pass, one micro-batch's loss).

For a pair (chosen y_w, rejected y_l) of the same prompt x, with r(y) = β·(log π(y|x) − log π_ref(y|x)):
loss = −log σ(r(y_w) − r(y_l)); reward_margin = r(y_w) − r(y_l); reward_accuracy = [r(y_w) > r(y_l)].

The reference is the policy itself before its first step (the input adapter, or a fresh LoRA,
which starts as the base model): its log-probs are computed once, without gradient, so no
second model is kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from cut.batches import collate
from cut.config import CutConfig
from cut.data import Triple
from cut.logprobs import autocast_for, response_logprobs
from cut.batches import TokenRow
from cut.rows import build_rows


@dataclass(frozen=True)
class DpoLoss:
    loss: torch.Tensor  # scalar: mean over pairs of −log σ(margin)
    reward_margin: torch.Tensor  # scalar: mean over pairs of r(chosen) − r(rejected)
    reward_accuracy: torch.Tensor  # scalar: share of pairs with r(chosen) > r(rejected)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
) -> DpoLoss:
    """Sigmoid DPO from [P] sequence log-probs of the chosen and rejected responses."""
    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return DpoLoss(
        loss=-F.logsigmoid(margin).mean(),
        reward_margin=margin.detach().mean(),
        reward_accuracy=(margin.detach() > 0).to(margin.dtype).mean(),
    )


@dataclass(frozen=True)
class PreferencePair:
    chosen: TokenRow  # prompt + chosen response, the response ids shared as every row's are
    rejected: TokenRow
    reference: tuple[float, float] | None = None  # sequence log-probs under the reference (chosen, rejected)

    @property
    def length(self) -> int:
        return max(self.chosen.length, self.rejected.length)


def pair_rows(
    triples: list[Triple], pairs: list[tuple[int, int]], tokenizer: PreTrainedTokenizerBase, config: CutConfig
) -> tuple[list[PreferencePair], int]:
    """The pairs whose two responses fit in `max_length`, and how many triples did not fit."""
    row_set = build_rows(triples, tokenizer, config, sorted({i for pair in pairs for i in pair}))
    by_triple = {row.triple_index: row for row in row_set.rows}
    kept = [PreferencePair(by_triple[c], by_triple[r]) for c, r in pairs if c in by_triple and r in by_triple]
    return kept, row_set.dropped


def _sequence_logprobs(model: torch.nn.Module, pairs: list[PreferencePair], config: CutConfig,
                       pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """[P] log π(chosen | x) and [P] log π(rejected | x) in one forward pass, and the tokens fed."""
    device = next(model.parameters()).device
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id).to(device)
    with autocast_for(device, config.precision):
        logp, _ = response_logprobs(model, batch, config.logit_chunk_tokens)
    chosen, rejected = logp.sum(dim=1).split(len(pairs))
    return chosen, rejected, batch.n_tokens


def with_reference(model: torch.nn.Module, pairs: list[PreferencePair], config: CutConfig,
                   pad_id: int) -> list[PreferencePair]:
    """The pairs with the model's own log-probs as reference: in eval mode, without gradient."""
    was_training = model.training
    model.eval()
    scored = []
    with torch.no_grad():
        for start in range(0, len(pairs), config.micro_batch_size):
            group = pairs[start : start + config.micro_batch_size]
            chosen, rejected, _ = _sequence_logprobs(model, group, config, pad_id)
            scored += [replace(p, reference=(c, r)) for p, c, r in zip(group, chosen.tolist(), rejected.tolist())]
    model.train(was_training)
    return scored


def dpo_micro_batch(model: torch.nn.Module, pairs: list[PreferencePair], config: CutConfig,
                    pad_id: int) -> tuple[torch.Tensor, dict[str, float], list]:
    """One micro-batch's DPO loss and the sums its step's metrics are made of (and no token scores:
    nothing is flagged)."""
    chosen, rejected, tokens = _sequence_logprobs(model, pairs, config, pad_id)
    reference = torch.tensor([p.reference for p in pairs], dtype=chosen.dtype, device=chosen.device)
    out = dpo_loss(chosen, rejected, reference[:, 0], reference[:, 1], config.dpo.beta)
    sums = {
        "loss": out.loss.item(),
        "margin_sum": out.reward_margin.item() * len(pairs),
        "accurate": out.reward_accuracy.item() * len(pairs),
        "pairs": len(pairs),
        "tokens": tokens,
    }
    return out.loss, sums, []


def dpo_step_metrics(sums: dict[str, float], micro_batches: int) -> dict[str, float]:
    """An optimizer step's metrics from its micro-batches' sums (`loss` is their mean, as the gradient's)."""
    return {
        "loss": sums["loss"] / micro_batches,
        "reward_margin": sums["margin_sum"] / sums["pairs"],
        "reward_accuracy": sums["accurate"] / sums["pairs"],
        "pairs": sums["pairs"],
    }
