"""Stable ids for natural keys: the same fields give the same id in every process and release.

An id is the sha256 of a canonical JSON encoding of the key fields, truncated to 16 hex
digits (64 bits). Python's `hash()` is salted per process, so it is never used here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ID_HEX_DIGITS = 16


def stable_hash(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS]


def prompt_id(instruction: str, input: str) -> str:
    """A prompt is its instruction and input; the same pair is one prompt across runs."""
    return stable_hash({"instruction": instruction, "input": input})


def response_id(run: str, round: int, prompt_id: str, adapter_id: str | None, sample_index: int) -> str:
    """The `sample_index`-th sample of a prompt in a round: a rerun of the same sampling adds nothing."""
    return stable_hash(
        {"run": run, "round": round, "prompt_id": prompt_id, "adapter_id": adapter_id, "sample_index": sample_index}
    )
