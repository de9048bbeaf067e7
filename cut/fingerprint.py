"""An adapter's fingerprint: the log-probs of fixed probe tokens under the trained model.

The trainer writes it beside the adapter's weights (`fingerprint.json`); a sampler scores the
same token ids (prompt log-probs, nothing generated) once the adapter is attached, and the two
must agree to within the engine's numerical noise, or the sampler is not serving these weights.

Each probe is a chat-templated prompt with a fixed response, tokenized apart and concatenated
as the trainer builds its rows. Every probe starts with the same system message, longer than
one KV-cache block (128 tokens on vLLM's CPU build, 16 on GPUs), so an engine that reads its
prefix cache while scoring reuses those blocks as sampling would: blocks computed with the
previous weights show in the scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINGERPRINT_FILE = "fingerprint.json"

PROBE_SYSTEM = (
    "You are a careful assistant taking part in a short consistency check. Read each question, "
    "think about what is being asked, and reply in plain English with one or two short sentences. "
    "Do not use lists, headings or code. When the question asks for a number, give the number and "
    "nothing else. When it asks for a description, keep to what is commonly known and avoid guessing. "
    "If a question is unclear, answer the most likely reading of it. Keep a calm and neutral tone, "
    "avoid jokes, and never mention these instructions in your reply. The same instructions hold "
    "for every question in this check, whatever its topic or wording."
)
PROBES = (
    ("What is 23 + 58? Reply with just the number.", "81"),
    ("Name three colours.", "Red, green and blue."),
    ("Write one sentence about the sea.", "The sea is wide and deep."),
    ("Explain what a verb is.", "A verb is a word for an action."),
)


@dataclass(frozen=True)
class ProbeSequence:
    """One probe's token ids: the prompt, then the response from `response_start` on."""

    token_ids: tuple[int, ...]
    response_start: int

    @property
    def response_ids(self) -> tuple[int, ...]:
        return self.token_ids[self.response_start :]


@dataclass(frozen=True)
class Fingerprint:
    """Per probe, log p of each response token under the model that wrote it (float32)."""

    sequences: tuple[ProbeSequence, ...]
    logprobs: tuple[tuple[float, ...], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "probes": [
                {"token_ids": list(s.token_ids), "response_start": s.response_start, "logprobs": list(lp)}
                for s, lp in zip(self.sequences, self.logprobs)
            ]
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Fingerprint:
        probes = payload["probes"]
        return cls(
            tuple(ProbeSequence(tuple(p["token_ids"]), p["response_start"]) for p in probes),
            tuple(tuple(p["logprobs"]) for p in probes),
        )


@dataclass(frozen=True)
class FingerprintDistance:
    """How far a sampler's scores of the probe tokens are from the fingerprint's."""

    max_abs: float  # max over tokens of |Δ log p|
    mean_abs: float  # mean over tokens of |Δ log p|
    tokens: int


def distance(expected: Fingerprint, measured: list[list[float]]) -> FingerprintDistance:
    """Compare `measured` (per probe, log p of each response token) with the fingerprint."""
    diffs = []
    for want, got in zip(expected.logprobs, measured, strict=True):
        if len(want) != len(got):
            raise ValueError(f"probe scored {len(got)} response tokens, the fingerprint has {len(want)}")
        diffs += [abs(a - b) for a, b in zip(want, got)]
    return FingerprintDistance(max(diffs), sum(diffs) / len(diffs), len(diffs))


def probe_sequences(tokenizer: Any) -> tuple[ProbeSequence, ...]:
    sequences = []
    for question, answer in PROBES:
        messages = [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": question}]
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        prompt = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        response = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        sequences.append(ProbeSequence(tuple(prompt + response), len(prompt)))
    return tuple(sequences)


def score_probe(model: Any, sequences: tuple[ProbeSequence, ...]) -> list[list[float]]:
    """log p of each probe's response tokens under `model` (a causal LM, PEFT-wrapped or not), in one
    forward pass over the right-padded batch, log-softmax taken in float32."""
    import torch

    device = next(model.parameters()).device
    width = max(len(s.token_ids) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence.token_ids)] = torch.tensor(sequence.token_ids)
        mask[row, : len(sequence.token_ids)] = 1
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    model.train(was_training)
    scores = []
    for row, sequence in enumerate(sequences):
        positions = torch.arange(sequence.response_start - 1, len(sequence.token_ids) - 1, device=device)
        logp = torch.log_softmax(logits[row, positions], dim=-1)
        targets = torch.tensor(sequence.response_ids, device=device)
        scores.append(logp.gather(1, targets[:, None]).squeeze(1).tolist())
    return scores


def adapter_fingerprint(model: Any, tokenizer: Any) -> Fingerprint:
    """The fingerprint of `model` as it is now (call it in float32, after training)."""
    sequences = probe_sequences(tokenizer)
    return Fingerprint(sequences, tuple(tuple(lp) for lp in score_probe(model, sequences)))


def write_fingerprint(fingerprint: Fingerprint, adapter_dir: Path) -> None:
    (Path(adapter_dir) / FINGERPRINT_FILE).write_text(json.dumps(fingerprint.as_dict()))


def read_fingerprint(adapter_dir: Path) -> Fingerprint | None:
    """The fingerprint saved with the adapter, or None for one written without it (imported, older)."""
    path = Path(adapter_dir) / FINGERPRINT_FILE
    return Fingerprint.from_dict(json.loads(path.read_text())) if path.is_file() else None
