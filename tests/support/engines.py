"""In-process vLLM samplers on the shipped model, opened the way the vLLM tests compare them.

Float32 keeps the LoRA and merged ways comparable token for token; the KV cache is sized in
bytes (on a CPU vLLM takes its own footprint out of a memory share, which left nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from samplers.base import Sampler
from samplers.config import SamplerConfig
from samplers.factory import open_sampler
from samplers.vllm_inprocess import VllmInProcessSampler

KV_CACHE_GIB = 0.25


@dataclass
class Opened:
    sampler: Sampler
    engines_started: int  # by opening the sampler


@contextmanager
def open_in_process(backend: str, model: Path) -> Iterator[Opened]:
    starts_before = VllmInProcessSampler.engine_starts
    with open_sampler(SamplerConfig(backend=backend, kv_cache_gib=KV_CACHE_GIB), model, dtype="float32") as sampler:
        yield Opened(sampler, VllmInProcessSampler.engine_starts - starts_before)
