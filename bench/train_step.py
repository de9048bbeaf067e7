"""Cost of the CUT objective: a CUT (and a DPO) step against an MLE step, and loss memory against the naive way.

Setup: the shipped SmolLM2-135M-Instruct with the config's LoRA, one micro-batch of B=8
triples from the CUT paper's first online round (the default class balance, so mostly
Align-N), each sequence capped at T=512 tokens (real lengths, padded to the longest).

- `cut_over_mle_step`: wall time of a CUT training step (forward, loss, backward, AdamW step)
  over the wall time of an MLE step over the same sequences. "The same sequences" means the
  same padded batch: every aligned sequence plus the Misalign sequence of each Align-N triple,
  run through the same forward and the same response-position log-probs; the MLE step
  then minimises the mean −log p of every response token of every sequence, CUT computes
  flags, L1 and L2. The ratio is what CUT's objective costs beyond plain MLE on that data.
  Steps alternate (CUT, MLE, DPO, CUT, ...) after a warm-up; each kind's fastest repetition counts
  (the machine is shared; the minimum is the least disturbed run).
- `dpo_over_mle_step`: the same for a DPO step over the same sequences: the same forward,
  each sequence's response log-prob summed, the first half of the sequences paired with the
  second half, sigmoid DPO against reference log-probs computed once beforehand (as a round
  does, once per round), so the ratio is what DPO's loss costs per step beyond MLE.
- `loss_memory_ratio`: peak memory of the loss computation (from the model body's hidden
  states to the scalar loss, forward and backward) the project's way — LM head only at
  response positions, in checkpointed chunks — over the same loss computed the naive way
  (the official repository's: LM head and a full-vocabulary log-softmax at every position,
  then gather). Peak memory is allocator accounting: torch.profiler records every CPU
  allocation and free made inside the loss computation; the peak of their running sum is the
  memory that computation needed on top of what existed before it. Both variants get the
  same hidden states (a leaf that requires grad) and both run `cut_loss` on their log-probs.

Run: `.venv/bin/python bench/train_step.py` (a few minutes on 2 CPU cores). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from transformers import AutoTokenizer

from cut.batches import Batch, collate
from cut.config import CutConfig
from cut.data import balanced_indices, load_triples
from cut.dpo import dpo_loss
from cut.logprobs import causal_lm_parts, label_logprobs, response_logprobs
from cut.objective import cut_loss
from cut.rows import build_rows
from cut.trainer import load_lora_model
from online_cut.base_model import shipped_model_dir

TRIPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cut-paper" / "online-iter1.json"


def cut_step_loss(model, batch: Batch, config: CutConfig) -> torch.Tensor:
    logp_al, logp_mis = response_logprobs(model, batch, config.logit_chunk_tokens)
    return cut_loss(logp_al, logp_mis, batch.mask, batch.negative, config.lam, config.alpha).loss


def mle_step_loss(model, batch: Batch, config: CutConfig) -> torch.Tensor:
    logp_al, logp_mis = response_logprobs(model, batch, config.logit_chunk_tokens)
    negative_tokens = batch.mask & batch.negative.unsqueeze(1)
    return -(logp_al[batch.mask].sum() + logp_mis[negative_tokens].sum()) / (batch.mask.sum() + negative_tokens.sum())


def sequence_logprobs(model, batch: Batch, config: CutConfig) -> torch.Tensor:
    """[N] summed response log-probs of every sequence of the batch (aligned ones, then Misalign ones)."""
    logp_al, logp_mis = response_logprobs(model, batch, config.logit_chunk_tokens)
    return torch.cat([logp_al.sum(dim=1), logp_mis[batch.negative].sum(dim=1)])


def dpo_step_loss(reference: torch.Tensor):
    """The DPO step's loss over the batch's sequences, paired half against half, against `reference` ([N])."""
    half = len(reference) // 2

    def step_loss(model, batch: Batch, config: CutConfig) -> torch.Tensor:
        policy = sequence_logprobs(model, batch, config)
        return dpo_loss(policy[:half], policy[half : 2 * half], reference[:half], reference[half : 2 * half],
                        config.dpo.beta).loss

    return step_loss


def timed_step(model, optimizer, batch, config, step_loss) -> float:
    started = time.perf_counter()
    step_loss(model, batch, config).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def loss_from_hidden_ours(lm_head, hidden, batch, config):
    logp = label_logprobs(lm_head, hidden.flatten(0, 1)[batch.hidden_index], batch.labels, config.logit_chunk_tokens)
    aligned, misaligned = logp.split([batch.n_aligned_tokens, logp.numel() - batch.n_aligned_tokens])
    zeros = torch.zeros(batch.mask.shape)
    logp_al = zeros.masked_scatter(batch.mask, aligned)
    logp_mis = zeros.masked_scatter(batch.mask & batch.negative.unsqueeze(1), misaligned)
    return cut_loss(logp_al, logp_mis, batch.mask, batch.negative, config.lam, config.alpha).loss


def loss_from_hidden_naive(lm_head, hidden, batch, config):
    """The official repository's way: logits and log-softmax over the whole vocabulary at every position."""
    logp_all = F.log_softmax(lm_head(hidden).float(), dim=-1)  # [N, L, V]
    logp = logp_all.flatten(0, 1)[batch.hidden_index].gather(1, batch.labels.unsqueeze(1)).squeeze(1)
    aligned, misaligned = logp.split([batch.n_aligned_tokens, logp.numel() - batch.n_aligned_tokens])
    zeros = torch.zeros(batch.mask.shape)
    logp_al = zeros.masked_scatter(batch.mask, aligned)
    logp_mis = zeros.masked_scatter(batch.mask & batch.negative.unsqueeze(1), misaligned)
    return cut_loss(logp_al, logp_mis, batch.mask, batch.negative, config.lam, config.alpha).loss


def loss_time_and_peak(loss_fn, lm_head, hidden_states, batch, config) -> tuple[float, int]:
    hidden = hidden_states.detach().requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        started = time.perf_counter()
        loss_fn(lm_head, hidden, batch, config).backward()
        seconds = time.perf_counter() - started
    allocations = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in allocations:
        live += event.nbytes()
        peak = max(peak, live)
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="triples in the micro-batch (B)")
    parser.add_argument("--max-length", type=int, default=512, help="cap on each sequence's tokens (T)")
    parser.add_argument("--reps", type=int, default=1, help="timed steps of each kind (after a short warm-up)")
    args = parser.parse_args()

    config = CutConfig(max_length=args.max_length)
    model_dir = shipped_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    triples = load_triples(TRIPLES)
    kept = balanced_indices(triples, config.positive_ratio, config.negative_ratio, config.seed)
    rows = build_rows(triples, tokenizer, config, kept).rows[: args.batch]
    batch = collate(rows, tokenizer.eos_token_id)

    torch.manual_seed(config.seed)
    model = load_lora_model(str(model_dir), config.lora, None, torch.device("cpu"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    timed_step(model, optimizer, collate(rows[:1], tokenizer.eos_token_id), config, cut_step_loss)  # warm-up
    with torch.no_grad():
        reference = sequence_logprobs(model, batch, config)
    step_losses = {"cut": cut_step_loss, "mle": mle_step_loss, "dpo": dpo_step_loss(reference)}
    times = {kind: [] for kind in step_losses}
    for _ in range(args.reps):
        for kind, step_loss in step_losses.items():
            times[kind].append(timed_step(model, optimizer, batch, config, step_loss))

    body, lm_head = causal_lm_parts(model)
    with torch.no_grad():
        hidden_states = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    ours_s, ours_peak = loss_time_and_peak(loss_from_hidden_ours, lm_head, hidden_states, batch, config)
    naive_s, naive_peak = loss_time_and_peak(loss_from_hidden_naive, lm_head, hidden_states, batch, config)

    result = {
        "batch_triples": len(rows),
        "sequences": int(batch.input_ids.shape[0]),
        "padded_length": int(batch.input_ids.shape[1]),
        "response_tokens": int(batch.labels.numel()),
        "cut_step_s": min(times["cut"]),
        "mle_step_s": min(times["mle"]),
        "dpo_step_s": min(times["dpo"]),
        "step_times_s": times,
        "loss_s": ours_s,
        "naive_loss_s": naive_s,
        "loss_peak_mib": ours_peak / 2**20,
        "naive_loss_peak_mib": naive_peak / 2**20,
        "cut_over_mle_step": min(times["cut"]) / min(times["mle"]),
        "dpo_over_mle_step": min(times["dpo"]) / min(times["mle"]),
        "loss_memory_ratio": ours_peak / naive_peak,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
