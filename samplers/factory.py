"""Open the sampler a config asks for; `auto` picks the fastest correct way for this machine.

Measured on a 2-core CPU with the shipped 135M model (bench/sample.py): vLLM's LoRA path is
the slowest way to sample an adapter there (its CPU LoRA kernels run at about a fifth of the
base model's speed), while merging the adapter into a warm engine's weights runs at base
speed. On GPUs vLLM's LoRA kernels are the fast way and need no weight reload.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from samplers.base import Sampler
from samplers.config import SamplerConfig

log = logging.getLogger(__name__)

# Samplers started before the code that opens them ran (`started_early`), by the arguments they were opened with.
_started_early: list[tuple[tuple[SamplerConfig, str, str, int], Sampler]] = []


def choose_backend(config: SamplerConfig) -> tuple[str, str]:
    """The back-end to use and why."""
    import torch

    if config.backend != "auto":
        return config.backend, f"backend {config.backend} set in the config"
    if config.base_url:
        return "vllm-server", f"a vLLM server is configured at {config.base_url}"
    if importlib.util.find_spec("vllm") is None:
        return "transformers", "vLLM is not installed: batched transformers generate with PEFT"
    if torch.cuda.is_available():
        return "vllm-lora", "CUDA device: vLLM's LoRA kernels sample adapters at near base speed"
    return "vllm-merged", "no GPU: vLLM's CPU LoRA kernels are slow, the adapter is merged into the warm engine"


def resolve_dtype(dtype: str, backend: str) -> str:
    """`auto`: bfloat16 where the device computes it natively (float16 on older GPUs), else float32.

    CPUs without AVX-512 BF16 or AMX emulate bfloat16: vLLM ran about 6x slower in bfloat16
    than in float32 on this project's AVX2 machine. transformers on CPU always gets float32, and so
    does vllm-merged: rounding the merged weights to bfloat16 ate part of a round's change, and the
    adapter check rejected the right adapter of a fresh `make demo` on an AMX machine
    (docs/adapter-check.md).
    """
    import torch

    if dtype != "auto":
        return dtype
    if torch.cuda.is_available():
        # With emulation counted, torch says yes on T4 and V100 cards, where vLLM refuses bfloat16.
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native_bf16 and backend not in ("transformers", "vllm-merged") else "float32"


def open_sampler(
    config: SamplerConfig, base_model: str | Path, *, dtype: str = "auto", max_model_len: int = 1024
) -> Sampler:
    """Start the configured sampler on `base_model` (a model folder or hub id); close it when done.

    Starts at most one engine; `sampler.backend` and `sampler.reason` say what was chosen and why.
    A sampler `started_early` with the same arguments is handed over instead of starting another.
    """
    arguments = (config, str(base_model), dtype, max_model_len)
    for entry in _started_early:
        if entry[0] == arguments:
            _started_early.remove(entry)
            return entry[1]
    backend, reason = choose_backend(config)
    log.info("sampler backend %s: %s", backend, reason)
    base_model = str(base_model)
    if backend == "vllm-server":
        from samplers.vllm_server import VllmServerSampler

        return VllmServerSampler(config, base_model, reason)
    dtype = resolve_dtype(dtype, backend)
    if backend == "transformers":
        from samplers.transformers_sampler import TransformersSampler

        return TransformersSampler(config, base_model, reason, dtype=dtype)
    from samplers.vllm_inprocess import VllmLoraSampler, VllmMergedSampler

    sampler_class = VllmLoraSampler if backend == "vllm-lora" else VllmMergedSampler
    return sampler_class(config, base_model, reason, dtype=dtype, max_model_len=max_model_len)


@contextmanager
def started_early(
    config: SamplerConfig, base_model: str | Path, *, dtype: str = "auto", max_model_len: int = 1024
) -> Iterator[Sampler]:
    """Start the sampler now, for the first later `open_sampler` with the same arguments to take over.

    For a caller that knows the config before the code that samples can run (`online-cut run` starts the
    engine while Prefect's temporary server starts). Closed on exit unless it was taken.
    """
    entry = ((config, str(base_model), dtype, max_model_len), open_sampler(config, base_model, dtype=dtype,
                                                                          max_model_len=max_model_len))
    _started_early.append(entry)
    try:
        yield entry[1]
    finally:
        if any(early is entry for early in _started_early):
            _started_early.remove(entry)
            entry[1].close()
