"""The training switches docs/scaling.md offers for GPUs, run on a CPU: each trains, and trains what
the plain path trains (the switch table there cites these tests)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cut.config import CutConfig
from cut.data import Triple
from cut.trainer import load_lora_model, train

TRIPLES = [Triple("Add 2 and 3.", "", "5", None), Triple("Add 4 and 4.", "", "9", "Wrong: 4 + 4 = 8."),
           Triple("Add 1 and 6.", "", "7", None), Triple("Add 5 and 5.", "", "11", "Wrong: 5 + 5 = 10.")]


def _trained(tiny_model, folder, **settings):
    config = CutConfig(micro_batch_size=2, positive_ratio=None, epochs=2, **settings)
    result = train(config, str(tiny_model), TRIPLES, folder, progress=False)
    return [step["loss"] for step in result.steps], load_file(result.adapter_dir / "adapter_model.safetensors")


def test_gradient_checkpointing_trains_the_same_adapter(tiny_model, tmp_path) -> None:
    """With PEFT, checkpointing that needs the inputs to require grads would leave the LoRA weights untrained."""
    plain_losses, plain = _trained(tiny_model, tmp_path / "plain")
    losses, checkpointed = _trained(tiny_model, tmp_path / "checkpointed", gradient_checkpointing=True)
    assert losses == pytest.approx(plain_losses, rel=1e-5)
    assert plain.keys() == checkpointed.keys()
    for name, weight in plain.items():
        torch.testing.assert_close(checkpointed[name], weight, rtol=1e-4, atol=1e-6)
    assert any(weight.abs().max() > 0 for name, weight in checkpointed.items() if "lora_B" in name)


def test_bfloat16_precision_trains_under_cpu_autocast(tiny_model, tmp_path) -> None:
    float32_losses, _ = _trained(tiny_model, tmp_path / "float32", precision="float32")
    losses, weights = _trained(tiny_model, tmp_path / "bfloat16", precision="bfloat16")
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses != float32_losses  # autocast did compute in bfloat16 ...
    assert losses == pytest.approx(float32_losses, rel=0.05)  # ... and what it computed is the same loss
    assert all(weight.dtype == torch.float32 for weight in weights.values())  # the adapter is kept in float32


@pytest.mark.parametrize(("precision", "base_dtype"), [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_the_frozen_base_is_held_in_the_training_precision_and_the_lora_weights_in_float32(
        tiny_model, precision, base_dtype) -> None:
    model = load_lora_model(str(tiny_model), CutConfig().lora, None, torch.device("cpu"), precision)
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {base_dtype}
