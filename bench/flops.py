"""FLOP counts of a LoRA training step, and the matrix-multiply peak they are set against.

Counted are the model's FLOPs, not the hardware's: a multiply-add is 2 FLOPs; a frozen weight
costs 2 per token forward and 2 backward (the gradient of its input; it has none of its own),
a trainable (LoRA) weight 2 + 4; attention's scores and weighted sum 2·L²·d forward per layer
and sequence (causal: half of the square), twice that backward; the LM head runs at response
positions only (`cut.logprobs`). Recomputation (activation checkpointing) is not counted.
"""

from __future__ import annotations

import time

import torch

from cut.batches import Batch
from cut.logprobs import causal_lm_parts


def body_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(frozen, trainable) weights of the model body's matrix multiplies: its 2-D parameters but the embedding."""
    body, _ = causal_lm_parts(model)
    frozen = trainable = 0
    for name, parameter in body.named_parameters():
        if parameter.ndim != 2 or "embed_tokens" in name:
            continue
        if parameter.requires_grad:
            trainable += parameter.numel()
        else:
            frozen += parameter.numel()
    return frozen, trainable


def dense_step_flops(frozen: int, trainable: int, tokens: int) -> float:
    """FLOPs of the body's weight multiplies, forward and backward, over `tokens` tokens."""
    return (4 * frozen + 6 * trainable) * tokens


def train_step_flops(model: torch.nn.Module, batch: Batch) -> float:
    """FLOPs of one forward and backward of `batch`: the body's weights, attention and the LM head."""
    body, lm_head = causal_lm_parts(model)
    frozen, trainable = body_weights(model)
    lengths = batch.attention_mask.sum(dim=1).double()
    config = body.config
    attention_width = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    attention = 3 * 2 * config.num_hidden_layers * attention_width * float((lengths**2).sum())
    head = 4 * lm_head.weight.numel() * batch.labels.numel()
    return dense_step_flops(frozen, trainable, batch.n_tokens) + attention + head


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall clock around it times the work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, reps: int = 5) -> float:
    """The fastest of `reps` square matrix multiplies of `size` (default: 8192 on a GPU, 2048 on a CPU), in FLOP/s."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):  # the first is a warm-up
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best
