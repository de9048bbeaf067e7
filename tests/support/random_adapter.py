"""Random LoRA adapters standing in for trained ones, for tests and benchmarks of the samplers."""

from __future__ import annotations

from pathlib import Path

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_random_adapter(
    base_model: str | Path,
    out_dir: Path,
    *,
    seed: int,
    scale: float = 0.05,
    rank: int = 16,
    target_modules: tuple[str, ...] = ALL_PROJECTIONS,
    zero: bool = False,
) -> Path:
    """Save a PEFT LoRA adapter for `base_model` with lora_B ~ N(0, scale²) drawn from `seed`.

    `zero=True` keeps PEFT's initialisation (lora_B = 0): an adapter that changes nothing,
    as an untrained one saved by mistake would. Its fingerprint is written beside it, as the
    trainer writes a trained adapter's.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cut.fingerprint import adapter_fingerprint, write_fingerprint

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules), lora_dropout=0.0)
    peft_model = get_peft_model(model, lora)
    if not zero:
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, scale)
    peft_model.save_pretrained(out_dir)
    write_fingerprint(adapter_fingerprint(peft_model, AutoTokenizer.from_pretrained(str(base_model)), None), out_dir)
    return out_dir
