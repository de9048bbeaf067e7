"""Log-probabilities of the response tokens, with logits only at response positions.

The model runs its own forward on whole sequences (through a DDP wrapper too, whose forward
sets up the gradient synchronisation of a multi-process training), asked for the logits of one
position only and for its final hidden states; only the hidden states that predict response
tokens go through the LM head, a chunk of `chunk_tokens` at a time under activation
checkpointing, so no [tokens, vocab] tensor outlives its chunk (backward recomputes it). Loss
memory is O(tokens · hidden), not O(B · T · vocab).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cut.batches import Batch


def _label_logprobs(lm_head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(lm_head(hidden).float(), labels, reduction="none")


def label_logprobs(
    lm_head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """log p(label) for each row of `hidden` [n, H], chunk by chunk."""
    pieces = [
        checkpoint(_label_logprobs, lm_head, h, y, use_reentrant=False)
        for h, y in zip(hidden.split(chunk_tokens), labels.split(chunk_tokens))
    ]
    return torch.cat(pieces)


def computes_in_bfloat16(device: torch.device, precision: str) -> bool:
    """`cut.precision` on `device`: bfloat16 when asked, or with `auto` on a GPU that computes it natively."""
    return precision == "bfloat16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    )


def autocast_for(device: torch.device, precision: str) -> torch.autocast:
    """The forward's autocast: bfloat16 where `computes_in_bfloat16`."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=computes_in_bfloat16(device, precision))


def causal_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(body, LM head) of a causal LM, or of the model inside a DDP and/or PEFT wrapper, for reading: a forward
    that must train goes through the wrapper (`response_logprobs`)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder(), inner.get_output_embeddings()


def response_logprobs(
    model: torch.nn.Module, batch: Batch, chunk_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] log-probs of each row's response under its aligned and its misaligned context.

    The misaligned tensor holds values on Align-N rows only (0 elsewhere, where `cut_loss` does not read it).
    """
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True,
                logits_to_keep=1)
    selected = out.hidden_states[-1].flatten(0, 1)[batch.hidden_index]  # the final norm's output
    _, lm_head = causal_lm_parts(model)
    logp = label_logprobs(lm_head, selected, batch.labels, chunk_tokens)
    aligned, misaligned = logp.split([batch.n_aligned_tokens, logp.numel() - batch.n_aligned_tokens])
    zeros = torch.zeros(batch.mask.shape, dtype=logp.dtype, device=logp.device)
    negative_tokens = batch.mask & batch.negative.unsqueeze(1)
    return zeros.masked_scatter(batch.mask, aligned), zeros.masked_scatter(negative_tokens, misaligned)
