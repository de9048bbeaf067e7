"""Reading PEFT LoRA adapter folders: is it usable, and can it change the model at all?"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterError(ValueError):
    """An adapter folder that cannot be attached; the message names the folder and what is wrong."""


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    rank: int
    # A LoRA update is B·A; with every lora_B zero (PEFT's initialisation) it changes nothing.
    is_zero: bool


def inspect_adapter(path: Path) -> AdapterInfo:
    """Validate a PEFT LoRA folder (as `save_pretrained` writes it) and read what the sampler needs."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    config_file = path / ADAPTER_CONFIG
    weights_file = path / ADAPTER_WEIGHTS
    if not config_file.is_file():
        raise AdapterError(f"{path}: not a PEFT adapter folder (no {ADAPTER_CONFIG})")
    if not weights_file.is_file():
        raise AdapterError(f"{path}: no {ADAPTER_WEIGHTS} (save the adapter with safetensors)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{config_file}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{config_file}: peft_type is {config.get('peft_type')!r}, expected 'LORA'")
    _check_lora_fields(config_file, config)
    try:
        with safe_open(weights_file, framework="pt") as weights:
            lora_b = [weights.get_tensor(name) for name in weights.keys() if "lora_B" in name]
    except SafetensorError as exc:
        raise AdapterError(f"{weights_file}: unreadable: {exc}") from None
    if not lora_b:
        raise AdapterError(f"{weights_file}: holds no lora_B weights")
    return AdapterInfo(path, config["r"], is_zero=not any(tensor.any() for tensor in lora_b))


def _check_lora_fields(config_file: Path, config: dict) -> None:
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"{config_file}: `r` (the LoRA rank) must be a positive integer, got {rank!r}")
    alpha = config.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise AdapterError(f"{config_file}: `lora_alpha` must be a number, got {alpha!r}")
    targets = config.get("target_modules")  # None: PEFT's default modules for the model type
    if not (targets is None or isinstance(targets, str)
            or (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        raise AdapterError(f"{config_file}: `target_modules` must be a module name or a list of them, got {targets!r}")


# How many mismatched weights an error names before it only counts the rest.
MISMATCHES_SHOWN = 3


def check_fits_base(path: Path, base_model: str) -> None:
    """Raise `AdapterError` unless the adapter at `path` attaches to `base_model`: its target modules
    exist there and every saved LoRA weight has the shape those layers take at the adapter's rank.

    The base is built from its config on the meta device, so no weights are read or allocated.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    try:
        base_config = AutoConfig.from_pretrained(base_model, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read the config of the base model {base_model!r} to check {path} against it: {exc}") from None
    try:
        with torch.device("meta"):
            model = get_peft_model(AutoModelForCausalLM.from_config(base_config), LoraConfig.from_pretrained(str(path)))
    except (ValueError, TypeError, KeyError) as exc:
        raise AdapterError(f"{path}: does not attach to {base_model}: {exc}") from None
    # Saved names lack the adapter's name: `...q_proj.lora_A.weight` for `...q_proj.lora_A.default.weight`.
    expected = {
        name.replace(".default.", "."): tuple(parameter.shape)
        for name, parameter in model.named_parameters()
        if "lora_" in name
    }
    with safe_open(path / ADAPTER_WEIGHTS, framework="pt") as weights:
        saved = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    problems = [
        f"{name}: shape {list(saved[name])}, the base needs {list(expected[name])}"
        for name in sorted(expected.keys() & saved.keys())
        if saved[name] != expected[name]
    ]
    problems += [f"{name}: missing" for name in sorted(expected.keys() - saved.keys())]
    problems += [f"{name}: not a weight of this base" for name in sorted(saved.keys() - expected.keys())]
    if problems:
        more = f" (and {len(problems) - MISMATCHES_SHOWN} more)" if len(problems) > MISMATCHES_SHOWN else ""
        raise AdapterError(
            f"{path}: does not fit the base model {base_model}: " + "; ".join(problems[:MISMATCHES_SHOWN]) + more
        )


def write_merged_weights(base_model: str, adapter: Path, out_dir: Path) -> None:
    """Save base + adapter merged (`merge_and_unload`) as a model folder, in the base checkpoint's dtype."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out_dir)
