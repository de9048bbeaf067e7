"""An adapter's fingerprint: the log-probs of fixed probe tokens under the trained model.

The trainer writes it beside the adapter's weights (`fingerprint.json`), in float32, with the
same tokens' log-probs under the model training started from (the parent: the previous
round's adapter or the base) and under the base model alone. A sampler scores the same token
ids (prompt log-probs, nothing generated) once the adapter is attached; `match` then asks
whether the engine's scores are those of this adapter rather than its parent's: where they lie
on the line from the parent's log-probs to the adapter's, against the engine's own noise, which
the base model's log-probs measure (`samplers/base.py`). Projected on that line, the noise of
the single tokens averages out, so adapters whose log-probs differ per token by little more than
the engine's noise are still told apart.

Each probe is a chat-templated prompt with a fixed response, tokenized apart and concatenated
as the trainer builds its rows. Every probe starts with the same system message, longer than
one KV-cache block (128 tokens on vLLM's CPU build, 16 on GPUs), so an engine that reads its
prefix cache while scoring reuses those blocks as sampling would: blocks computed with the
previous weights show in the scores.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FINGERPRINT_FILE = "fingerprint.json"
# A base model's folder may carry the probe's log-probs under its own weights in float32 (`online-cut model
# prepare` writes them for the shipped model): a first round then scores the probe once, not twice.
BASE_LOGPROBS_FILE = "probe-logprobs.json"

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


LogProbs = tuple[tuple[float, ...], ...]
"""Per probe, log p of each response token."""


@dataclass(frozen=True)
class Fingerprint:
    """Per probe, log p of each response token under the model that wrote it, its parent and the
    base model alone (float32). Fingerprints written before the parent's and the base's were
    recorded hold only the adapter's."""

    sequences: tuple[ProbeSequence, ...]
    logprobs: LogProbs
    parent_logprobs: LogProbs | None = None
    base_logprobs: LogProbs | None = None

    def as_dict(self) -> dict[str, Any]:
        probes = []
        for index, (sequence, logprobs) in enumerate(zip(self.sequences, self.logprobs)):
            probe = {"token_ids": list(sequence.token_ids), "response_start": sequence.response_start,
                     "logprobs": list(logprobs)}
            for key, other in (("parent_logprobs", self.parent_logprobs), ("base_logprobs", self.base_logprobs)):
                if other is not None:
                    probe[key] = list(other[index])
            probes.append(probe)
        return {"probes": probes}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Fingerprint:
        probes = payload["probes"]

        def optional(key: str) -> LogProbs | None:
            return tuple(tuple(p[key]) for p in probes) if all(key in p for p in probes) else None

        return cls(
            tuple(ProbeSequence(tuple(p["token_ids"]), p["response_start"]) for p in probes),
            tuple(tuple(p["logprobs"]) for p in probes),
            optional("parent_logprobs"),
            optional("base_logprobs"),
        )


@dataclass(frozen=True)
class FingerprintDistance:
    """How far a sampler's scores of the probe tokens are from the fingerprint's."""

    max_abs: float  # max over tokens of |Δ log p|
    mean_abs: float  # mean over tokens of |Δ log p|
    rms: float  # root mean square over tokens of Δ log p
    tokens: int


def distance(expected: LogProbs, measured: LogProbs | list[list[float]]) -> FingerprintDistance:
    """Compare `measured` (per probe, log p of each response token) with `expected`."""
    diffs = _flat(measured, expected)
    return FingerprintDistance(max(map(abs, diffs)), sum(map(abs, diffs)) / len(diffs),
                               math.sqrt(sum(d * d for d in diffs) / len(diffs)), len(diffs))


def _flat(minuend: LogProbs | list[list[float]], subtrahend: LogProbs) -> list[float]:
    """Token by token, `minuend - subtrahend`, over every probe."""
    diffs = []
    for want, got in zip(subtrahend, minuend, strict=True):
        if len(want) != len(got):
            raise ValueError(f"probe scored {len(got)} response tokens, the fingerprint has {len(want)}")
        diffs += [b - a for a, b in zip(want, got)]
    return diffs


# The engine's mean distance from the adapter may be this many times its noise on the base model:
# a trained adapter moves some probe tokens to lower probabilities, where rounding moves log p
# further (measured on real adapters: docs/adapter-check.md).
NOISE_MULTIPLE = 4.0
# Adapter and parent this many noise units apart (along the line between them) or more can be told
# apart: the engine's position on that line is then 0 or 1 give or take 1/SEPARABLE_Z (one standard
# deviation of independent per-token noise), and the verdict's boundary at 0.5 is 3 of them away.
SEPARABLE_Z = 6.0

Verdict = Literal["match", "indistinguishable", "mismatch"]


@dataclass(frozen=True)
class FingerprintMatch:
    """Whether an engine's scores of the probe tokens are the adapter's rather than its parent's."""

    adapter: FingerprintDistance  # engine vs the adapter's float32 log-probs
    parent: FingerprintDistance | None  # engine vs the parent's (None: not recorded)
    # Where the engine's scores lie on the line from the parent's (0) to the adapter's (1) log-probs: measured
    # from the engine's own scores of the parent where it served the parent before (`parent_on_engine`).
    position: float | None
    separation: float | None  # |adapter − parent| over the engine's rms noise: what there is to tell apart
    noise: FingerprintDistance  # the engine's own distance from the float32 base model
    noise_measured: bool  # False: the precision's typical noise, assumed (no base log-probs to measure it)
    verdict: Verdict
    parent_on_engine: bool = False

    @property
    def tolerance(self) -> float:
        """The largest mean |Δ log p| from the adapter's log-probs that passes."""
        return NOISE_MULTIPLE * self.noise.mean_abs

    def against_parent(self) -> str:
        """Where the engine's scores lie between the parent's log-probs and the adapter's, in words."""
        if self.parent is None:
            return "no parent's log-probs recorded"
        if self.position is None:
            return f"{self.parent.mean_abs:.3g} from its parent's, whose log-probs are the adapter's"
        return (f"{self.parent.mean_abs:.3g} from its parent's, at {self.position:.2f} of the way from the parent's "
                f"to the adapter's ({self.separation:.1f} noise units apart)")


def match(expected: Fingerprint, measured: list[list[float]], noise: FingerprintDistance, noise_measured: bool,
          parent_scores: list[list[float]] | None = None) -> FingerprintMatch:
    """The verdict on an engine whose scores of `expected`'s probe tokens are `measured`; `parent_scores`:
    the same engine's scores of the parent, where it served the parent before.

    The position is measured from the engine's own scores of the parent where there are some: bfloat16
    rounding shifts an adapter's scores along the line by up to 0.4 of its length, and shifts its
    parent's alike, so the shift cancels (docs/adapter-check.md).

    - mismatch: farther from the adapter's log-probs than `NOISE_MULTIPLE` times the engine's
      noise (other weights altogether), or nearer the parent's end of the line between them;
    - indistinguishable: within the noise, but adapter and parent lie less than `SEPARABLE_Z`
      noise units apart, so the parent's weights could pass as well;
    - match: within the noise and on the adapter's half of the line.
    """
    to_adapter = distance(expected.logprobs, measured)
    if expected.parent_logprobs is None:
        verdict: Verdict = "match" if to_adapter.mean_abs <= NOISE_MULTIPLE * noise.mean_abs else "mismatch"
        return FingerprintMatch(to_adapter, None, None, None, noise, noise_measured, verdict)
    step = _flat(expected.logprobs, expected.parent_logprobs)
    offset = _flat(measured, parent_scores if parent_scores is not None else expected.parent_logprobs)
    length2 = sum(d * d for d in step)
    position = sum(o * d for o, d in zip(offset, step)) / length2 if length2 else None
    separation = math.sqrt(length2) / noise.rms
    if to_adapter.mean_abs > NOISE_MULTIPLE * noise.mean_abs:
        verdict = "mismatch"
    elif separation < SEPARABLE_Z:
        verdict = "indistinguishable"
    else:
        verdict = "match" if position > 0.5 else "mismatch"
    return FingerprintMatch(to_adapter, distance(expected.parent_logprobs, measured), position, separation, noise,
                            noise_measured, verdict, parent_on_engine=parent_scores is not None)


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
    """log p of each probe's response tokens under `model` (a causal LM, PEFT-wrapped or not), log-softmax
    taken in float32. The probes' common prefix (the system prompt, most of their tokens) runs once and
    its keys and values serve every probe: the trainer writes a fingerprint every round, and the full
    batch cost it about a second a round on 2 CPU cores."""
    import torch

    device = next(model.parameters()).device
    common = len(os.path.commonprefix([s.token_ids for s in sequences]))
    shared = min(common, min(s.response_start for s in sequences) - 1)  # every probe keeps a scored position
    rests = [s.token_ids[shared:] for s in sequences]
    width = max(map(len, rests))
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.ones(len(sequences), shared + width, dtype=torch.long)
    for row, rest in enumerate(rests):
        ids[row, : len(rest)] = torch.tensor(rest)
        mask[row, shared + len(rest) :] = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        cache = None
        if shared:
            cache = model(input_ids=torch.tensor([sequences[0].token_ids[:shared]], device=device), use_cache=True,
                          logits_to_keep=1).past_key_values  # its logits are not scored
            cache.batch_repeat_interleave(len(sequences))
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache).logits.float()
    model.train(was_training)
    scores = []
    for row, sequence in enumerate(sequences):
        positions = torch.arange(sequence.response_start - 1 - shared, len(sequence.token_ids) - 1 - shared, device=device)
        logp = torch.log_softmax(logits[row, positions], dim=-1)
        targets = torch.tensor(sequence.response_ids, device=device)
        scores.append(logp.gather(1, targets[:, None]).squeeze(1).tolist())
    return scores


def adapter_fingerprint(model: Any, tokenizer: Any, parent: Fingerprint | None,
                        base_dir: str | Path | None = None) -> Fingerprint:
    """The fingerprint of `model` (a PEFT model in float32, after training) continued from the adapter
    whose fingerprint is `parent` (None: a fresh LoRA on the base model, which is then the parent).
    The base's log-probs come from `parent` where it holds them, else from the base model's folder
    `base_dir` where it carries them for a float32 base, so only a first round may score the base
    (with the adapter disabled)."""
    import torch

    sequences = probe_sequences(tokenizer)
    same_probe = parent is not None and parent.sequences == sequences
    base = parent.base_logprobs if same_probe else None
    if base is None and base_dir is not None and model.get_base_model().dtype == torch.float32:
        base = stored_base_logprobs(base_dir, sequences)
    if base is None:
        with model.disable_adapter():
            base = _logprobs(model, sequences)
    parent_logprobs = base if parent is None else parent.logprobs if same_probe else None
    return Fingerprint(sequences, _logprobs(model, sequences), parent_logprobs, base)


def parent_fingerprint(model: Any, tokenizer: Any) -> Fingerprint:
    """The probe's log-probs under `model` before training, for a continued adapter saved without a fingerprint."""
    sequences = probe_sequences(tokenizer)
    return Fingerprint(sequences, _logprobs(model, sequences))


def _logprobs(model: Any, sequences: tuple[ProbeSequence, ...]) -> LogProbs:
    return tuple(tuple(lp) for lp in score_probe(model, sequences))


def write_base_logprobs(model: Any, tokenizer: Any, model_dir: Path) -> None:
    """Write the probe's log-probs under `model` (a base model in float32) into its folder `model_dir`."""
    sequences = probe_sequences(tokenizer)
    path = Path(model_dir) / BASE_LOGPROBS_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(Fingerprint(sequences, _logprobs(model, sequences)).as_dict()))
    partial.replace(path)  # a crash never leaves half a file for a round to read


def stored_base_logprobs(model_dir: str | Path, sequences: tuple[ProbeSequence, ...]) -> LogProbs | None:
    """The log-probs of `sequences` that the model folder `model_dir` carries; None where it carries none, or
    another probe's (a tokenizer or probe changed since it was written)."""
    path = Path(model_dir) / BASE_LOGPROBS_FILE
    if not path.is_file():
        return None
    stored = Fingerprint.from_dict(json.loads(path.read_text()))
    return stored.logprobs if stored.sequences == sequences else None


def write_fingerprint(fingerprint: Fingerprint, adapter_dir: Path) -> None:
    (Path(adapter_dir) / FINGERPRINT_FILE).write_text(json.dumps(fingerprint.as_dict()))


def read_fingerprint(adapter_dir: Path) -> Fingerprint | None:
    """The fingerprint saved with the adapter, or None for one written without it (imported, older)."""
    path = Path(adapter_dir) / FINGERPRINT_FILE
    return Fingerprint.from_dict(json.loads(path.read_text())) if path.is_file() else None
