"""Trainable LoRA weights on a causal LM (PEFT), with nothing of the project's config around them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model


def add_lora(model: torch.nn.Module, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> PeftModel:
    """`model` wrapped with fresh LoRA weights (rank `r`, scale alpha / r) on `target_modules`; the rest frozen."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)
