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
  Steps alternate after a warm-up step on the same batch, each repetition starting with the next
  kind (CUT, MLE, DPO; then MLE, DPO, CUT; ...), since later steps ran faster here; by default
  there are as many repetitions as kinds, so each kind runs once in each place. Each kind's
  fastest repetition counts (the machine is shared; the minimum is the least disturbed run).
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

With `--model-shape llama-1b|llama-8b` (or `tiny`, to try the path on a CPU) the model is a
random-weight Llama of that shape instead (no download), in bfloat16 on `--device cuda`, and
the batch is random tokens: B=8 triples, 3 in 4 of them Align-N, every sequence T=2048 tokens,
half of each the response. The step also reports its peak memory, tokens/s and achieved FLOP/s
over a bfloat16 matrix-multiply peak measured in the same run (`bench/flops.py`). That path
imports only `cut/` (none of its config, which needs pydantic), torch, transformers and peft: a
GPU machine with PyTorch and those runs it. DPO is timed on the shipped model only.

Run: `.venv/bin/python bench/train_step.py` (about 6 minutes on 2 CPU cores);
`python bench/train_step.py --device cuda --model-shape llama-8b` on a GPU. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from cut.batches import Batch, TokenRow, collate
from cut.logprobs import autocast_for, causal_lm_parts, label_logprobs, response_logprobs
from cut.lora import add_lora
from cut.objective import cut_loss
from flops import matmul_peak_flops, synchronize, train_step_flops

# Llama 3.2 1B and Llama 3.1 8B, and a tiny one that runs the same path on a CPU in seconds.
MODEL_SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}
# Activations of B=8, T=2048 through 8B's 32 layers outgrow one card's memory unless checkpointed.
CHECKPOINTED_SHAPES = {"llama-8b"}
# Per device: the step's autocast (`cut.logprobs.autocast_for`) and the dtype of a random model's weights.
PRECISIONS = {"cpu": ("float32", torch.float32), "cuda": ("bfloat16", torch.bfloat16)}


@dataclass(frozen=True)
class StepSettings:
    """What a timed step reads of the training config: `cut.config.CutConfig`'s defaults, held here as
    plain values so the random-model path needs no pydantic (a test pins them to the config's)."""

    lam: float = 1.1
    alpha: float = 1.0
    logit_chunk_tokens: int = 1024
    dpo_beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = field(default=("gate_proj", "up_proj", "down_proj"))

    @classmethod
    def of(cls, config) -> StepSettings:
        """The settings of a `cut.config.CutConfig`."""
        return cls(config.lam, config.alpha, config.logit_chunk_tokens, config.dpo.beta, config.lora.r,
                   config.lora.alpha, config.lora.dropout, tuple(config.lora.target_modules))


def cut_step_loss(model, batch: Batch, settings: StepSettings) -> torch.Tensor:
    logp_al, logp_mis = response_logprobs(model, batch, settings.logit_chunk_tokens)
    return cut_loss(logp_al, logp_mis, batch.mask, batch.negative, settings.lam, settings.alpha).loss


def mle_step_loss(model, batch: Batch, settings: StepSettings) -> torch.Tensor:
    logp_al, logp_mis = response_logprobs(model, batch, settings.logit_chunk_tokens)
    negative_tokens = batch.mask & batch.negative.unsqueeze(1)
    return -(logp_al[batch.mask].sum() + logp_mis[negative_tokens].sum()) / (batch.mask.sum() + negative_tokens.sum())


def sequence_logprobs(model, batch: Batch, settings: StepSettings) -> torch.Tensor:
    """[N] summed response log-probs of every sequence of the batch (aligned ones, then Misalign ones)."""
    logp_al, logp_mis = response_logprobs(model, batch, settings.logit_chunk_tokens)
    return torch.cat([logp_al.sum(dim=1), logp_mis[batch.negative].sum(dim=1)])


def dpo_step_loss(reference: torch.Tensor):
    """The DPO step's loss over the batch's sequences, paired half against half, against `reference` ([N])."""
    from cut.dpo import dpo_loss

    half = len(reference) // 2

    def step_loss(model, batch: Batch, settings: StepSettings) -> torch.Tensor:
        policy = sequence_logprobs(model, batch, settings)
        return dpo_loss(policy[:half], policy[half : 2 * half], reference[:half], reference[half : 2 * half],
                        settings.dpo_beta).loss

    return step_loss


def timed_step(model, optimizer, batch, settings, step_loss, precision: str) -> float:
    device = batch.input_ids.device
    synchronize(device)
    started = time.perf_counter()
    with autocast_for(device, precision):
        loss = step_loss(model, batch, settings)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - started


def loss_from_hidden_ours(lm_head, hidden, batch, settings):
    logp = label_logprobs(lm_head, hidden.flatten(0, 1)[batch.hidden_index], batch.labels, settings.logit_chunk_tokens)
    return cut_loss_of(logp, batch, settings)


def loss_from_hidden_naive(lm_head, hidden, batch, settings):
    """The official repository's way: logits and log-softmax over the whole vocabulary at every position."""
    logp_all = F.log_softmax(lm_head(hidden).float(), dim=-1)  # [N, L, V]
    logp = logp_all.flatten(0, 1)[batch.hidden_index].gather(1, batch.labels.unsqueeze(1)).squeeze(1)
    return cut_loss_of(logp, batch, settings)


def cut_loss_of(logp: torch.Tensor, batch: Batch, settings: StepSettings) -> torch.Tensor:
    aligned, misaligned = logp.split([batch.n_aligned_tokens, logp.numel() - batch.n_aligned_tokens])
    zeros = torch.zeros(batch.mask.shape, dtype=logp.dtype, device=logp.device)
    logp_al = zeros.masked_scatter(batch.mask, aligned)
    logp_mis = zeros.masked_scatter(batch.mask & batch.negative.unsqueeze(1), misaligned)
    return cut_loss(logp_al, logp_mis, batch.mask, batch.negative, settings.lam, settings.alpha).loss


def loss_time_and_peak(loss_fn, lm_head, hidden_states, batch, settings) -> tuple[float, int]:
    """Seconds and peak bytes of the loss computation, forward and backward, on top of what existed before it:
    the CUDA allocator's peak on a GPU; on a CPU, the peak of the running sum of the allocations and frees
    torch.profiler records."""
    hidden = hidden_states.detach().requires_grad_()
    if hidden.device.type == "cuda":
        synchronize(hidden.device)
        torch.cuda.reset_peak_memory_stats(hidden.device)
        before = torch.cuda.memory_allocated(hidden.device)
        started = time.perf_counter()
        loss_fn(lm_head, hidden, batch, settings).backward()
        synchronize(hidden.device)
        return time.perf_counter() - started, torch.cuda.max_memory_allocated(hidden.device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        started = time.perf_counter()
        loss_fn(lm_head, hidden, batch, settings).backward()
        seconds = time.perf_counter() - started
    allocations = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in allocations:
        live += event.nbytes()
        peak = max(peak, live)
    return seconds, peak


def shipped_model_and_batch(args, device: torch.device):
    """The shipped model with the config's LoRA, and a micro-batch of the CUT paper's triples."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from cut.config import CutConfig
    from cut.data import balanced_indices, load_triples
    from cut.rows import build_rows
    from cut.trainer import load_lora_model
    from online_cut.base_model import shipped_model_dir

    triples_file = Path(__file__).resolve().parents[2] / "shared" / "data" / "cut-paper" / "online-iter1.json"
    config = CutConfig(max_length=args.max_length)
    model_dir = shipped_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    triples = load_triples(triples_file)
    kept = balanced_indices(triples, config.positive_ratio, config.negative_ratio, config.seed)
    rows = build_rows(triples, tokenizer, config, kept).rows[: args.batch]
    torch.manual_seed(config.seed)
    model = load_lora_model(str(model_dir), config.lora, None, device)
    return model, rows, tokenizer.eos_token_id, StepSettings.of(config)


def random_model_and_batch(args, device: torch.device):
    """A random-weight Llama of `args.model_shape` with LoRA, and B random-token triples of T tokens each."""
    settings = StepSettings()
    torch.manual_seed(0)
    shape = LlamaConfig(**MODEL_SHAPES[args.model_shape])
    with torch.device(device):
        model = LlamaForCausalLM(shape).to(PRECISIONS[args.device][1])
    model = add_lora(model, settings.lora_r, settings.lora_alpha, settings.lora_dropout, settings.lora_target_modules)
    if args.model_shape in CHECKPOINTED_SHAPES:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    response_len = args.max_length // 2

    def tokens(n: int) -> list[int]:
        return torch.randint(0, shape.vocab_size, (n,)).tolist()

    rows = []
    for i in range(args.batch):
        response = tokens(response_len)
        aligned = tokens(args.max_length - response_len) + response
        negative = i < args.batch * 3 // 4
        misaligned = tokens(args.max_length - response_len) + response if negative else None
        rows.append(TokenRow(i, aligned, misaligned, response_len))
    return model, rows, 0, settings


def peak_memory_gib(device: torch.device) -> float:
    """The step's peak: the CUDA allocator's on a GPU, the process's resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-shape", choices=["shipped", *MODEL_SHAPES], default="shipped",
                        help="shipped: SmolLM2-135M on the CUT paper's triples; else a random-weight Llama of that shape")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda runs the step in bfloat16 autocast (random shapes: bfloat16 weights)")
    parser.add_argument("--batch", type=int, default=8, help="triples in the micro-batch (B)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="cap on each sequence's tokens (T; default 512 shipped, 2048 for a random shape)")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed steps of each kind, after a warm-up (default: one per kind, so each kind runs once "
                             "in each place)")
    args = parser.parse_args()
    shipped = args.model_shape == "shipped"
    args.max_length = args.max_length or (512 if shipped else 2048)
    device = torch.device(args.device)
    precision, dtype = PRECISIONS[args.device]

    model, rows, pad_id, settings = (shipped_model_and_batch if shipped else random_model_and_batch)(args, device)
    batch = collate(rows, pad_id).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    # On the full batch: the first step of that size pays for growing the allocator's memory.
    timed_step(model, optimizer, batch, settings, mle_step_loss, precision)
    step_losses = {"cut": cut_step_loss, "mle": mle_step_loss}
    if shipped:
        with torch.no_grad():
            step_losses["dpo"] = dpo_step_loss(sequence_logprobs(model, batch, settings))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = {kind: [] for kind in step_losses}
    kinds = list(step_losses)
    for rep in range(args.reps or len(kinds)):  # each repetition starts with the next kind: none always runs first
        for kind in kinds[rep % len(kinds):] + kinds[: rep % len(kinds)]:
            times[kind].append(timed_step(model, optimizer, batch, settings, step_losses[kind], precision))
    step_peak_gib = peak_memory_gib(device)

    body, lm_head = causal_lm_parts(model)
    with torch.no_grad(), autocast_for(device, precision):
        hidden_states = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    ours_s, ours_peak = loss_time_and_peak(loss_from_hidden_ours, lm_head, hidden_states, batch, settings)
    naive_s, naive_peak = loss_time_and_peak(loss_from_hidden_naive, lm_head, hidden_states, batch, settings)

    cut_s = min(times["cut"])
    step_flops = train_step_flops(model, batch)
    peak_flops = matmul_peak_flops(device, dtype)
    result = {
        "model_shape": args.model_shape,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
        "batch_triples": len(rows),
        "sequences": int(batch.input_ids.shape[0]),
        "padded_length": int(batch.input_ids.shape[1]),
        "response_tokens": int(batch.labels.numel()),
        "cut_step_s": cut_s,
        "mle_step_s": min(times["mle"]),
        **({"dpo_step_s": min(times["dpo"])} if "dpo" in times else {}),
        "step_times_s": times,
        "step_peak_memory_gib": step_peak_gib,
        "tokens_per_s": batch.n_tokens / cut_s,
        "step_flops": step_flops,
        "achieved_flops_per_s": step_flops / cut_s,
        "matmul_peak_flops_per_s": peak_flops,
        "flops_share_of_matmul_peak": step_flops / cut_s / peak_flops,
        "loss_s": ours_s,
        "naive_loss_s": naive_s,
        "loss_peak_mib": ours_peak / 2**20,
        "naive_loss_peak_mib": naive_peak / 2**20,
        "cut_over_mle_step": cut_s / min(times["mle"]),
        **({"dpo_over_mle_step": min(times["dpo"]) / min(times["mle"])} if "dpo" in times else {}),
        "loss_memory_ratio": ours_peak / naive_peak,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
