"""A tiny random Llama for tests that train or sample in seconds."""

from __future__ import annotations

from pathlib import Path


def build_tiny_llama(
    out_dir: Path,
    tokenizer_dir: Path,
    *,
    num_layers: int = 2,
    hidden_size: int = 128,
    seed: int = 0,
) -> Path:
    """A randomly initialised Llama with the shipped tokenizer, for fast tests.

    Its head size (64) is the shipped model's, one that vLLM's CPU attention kernels accept.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
