"""Token rows (what `cut.rows` makes of triples) → padded micro-batches, grouped by length so little
compute goes to padding."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import torch


@dataclass(frozen=True)
class TokenRow:
    triple_index: int  # position in the list of triples given to `build_rows`
    aligned_ids: list[int]  # aligned-context prompt + response
    misaligned_ids: list[int] | None  # Misalign-context prompt + response; Align-N rows of `cut` only
    response_len: int  # the last `response_len` ids of both sequences are the target
    target: Literal["response", "judgment"] = "response"  # what the target is; judgment: forward's second row
    blamed: tuple[int, ...] | None = None  # Align-N rows: target tokens the judgment's spans cover; None: no span
    blame_weights: tuple[float, ...] | None = None  # per blamed token: its severity's weight on α (None: all 1)

    @property
    def negative(self) -> bool:
        """An Align-N row: its response gets the unlikelihood term."""
        return self.misaligned_ids is not None

    @property
    def response_ids(self) -> list[int]:
        """The target's ids (the response's, unless `target` says judgment)."""
        return self.aligned_ids[-self.response_len :]

    @property
    def length(self) -> int:
        return max(len(self.aligned_ids), len(self.misaligned_ids or ()))


@dataclass
class Batch:
    """One forward pass: the aligned sequences of every row, then the misaligned ones of Align-N rows.

    `hidden_index` points (into the flattened [N, L] positions) at the hidden states that
    predict response tokens, aligned rows first, each row in token order; `labels` are those
    tokens. `mask` [B, T] and `negative` [B] lay the same tokens out per row for `cut_loss`.
    """

    input_ids: torch.Tensor  # [N, L], right-padded
    attention_mask: torch.Tensor  # [N, L]
    hidden_index: torch.Tensor  # [n_aligned_tokens + n_misaligned_tokens]
    labels: torch.Tensor  # same length as hidden_index
    mask: torch.Tensor  # bool [B, T]
    negative: torch.Tensor  # bool [B]
    blamed: torch.Tensor  # bool [B, T]: response tokens a judgment's spans cover
    has_spans: torch.Tensor  # bool [B]: rows whose judgment located a span
    blame_weights: torch.Tensor  # float [B, T]: each blamed token's severity weight on α, 1 elsewhere
    rows: list[TokenRow]

    @property
    def n_aligned_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens fed to the model."""
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> Batch:
        tensors = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return Batch(**tensors, rows=self.rows)


class _HasLength(Protocol):
    @property
    def length(self) -> int: ...


Sized = TypeVar("Sized", bound=_HasLength)


def micro_batches(rows: list[Sized], size: int, window: int, rng: random.Random) -> list[list[Sized]]:
    """Shuffle, sort by length within windows of `window` micro-batches, cut, shuffle the micro-batches
    (rows, or DPO's pairs)."""
    order = rows[:]
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), size * window):
        by_length = sorted(order[start : start + size * window], key=lambda row: row.length)
        batches += [by_length[i : i + size] for i in range(0, len(by_length), size)]
    rng.shuffle(batches)
    return batches


def collate(rows: list[TokenRow], pad_id: int) -> Batch:
    sequences = [row.aligned_ids for row in rows] + [row.misaligned_ids for row in rows if row.negative]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        attention_mask[i, : len(sequence)] = 1

    # The hidden state at position p predicts token p + 1.
    row_of_sequence = list(rows) + [row for row in rows if row.negative]
    hidden_index = torch.cat(
        [
            i * width + torch.arange(len(s) - row.response_len - 1, len(s) - 1)
            for i, (s, row) in enumerate(zip(sequences, row_of_sequence))
        ]
    )
    labels = torch.tensor([t for row in row_of_sequence for t in row.response_ids])

    longest_response = max(row.response_len for row in rows)
    mask = torch.arange(longest_response).unsqueeze(0) < torch.tensor([row.response_len for row in rows]).unsqueeze(1)
    negative = torch.tensor([row.negative for row in rows])
    blamed = torch.zeros_like(mask)
    blame_weights = torch.ones(mask.shape)
    for b, row in enumerate(rows):
        blamed[b, list(row.blamed or ())] = True
        if row.blame_weights is not None:
            blame_weights[b, list(row.blamed)] = torch.tensor(row.blame_weights)
    has_spans = torch.tensor([row.blamed is not None for row in rows])
    return Batch(input_ids, attention_mask, hidden_index, labels, mask, negative, blamed, has_spans, blame_weights, rows)
