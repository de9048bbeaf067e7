"""The adapter check's verdict (`cut.fingerprint.match`) and what the trainer records for it."""

from __future__ import annotations

import json
import random

import pytest

from cut.config import CutConfig
from cut.data import Triple
from cut.fingerprint import (
    BASE_LOGPROBS_FILE,
    NOISE_MULTIPLE,
    SEPARABLE_Z,
    Fingerprint,
    PROBES,
    FingerprintDistance,
    ProbeSequence,
    match,
    probe_sequences,
    read_fingerprint,
    score_probe,
    stored_base_logprobs,
    write_base_logprobs,
)
from cut.trainer import train

TOKENS = 40
SEQUENCES = (ProbeSequence(tuple(range(50)), 50 - TOKENS),)


def jittered(logprobs: tuple[float, ...], size: float, seed: int) -> list[list[float]]:
    """`logprobs` with each value moved by up to ±2·size at random (mean |Δ| ≈ size)."""
    rng = random.Random(seed)
    return [[value + rng.uniform(-2 * size, 2 * size) for value in logprobs]]


def fingerprint(adapter: list[float], parent: list[float] | None) -> Fingerprint:
    return Fingerprint(SEQUENCES, (tuple(adapter),), None if parent is None else (tuple(parent),), None)


BASE = [-0.5 - (i % 7) * 0.3 for i in range(TOKENS)]
# A round's change on the probe: about 0.05 nat per token, no more than a bfloat16 engine's noise on
# it, as round 1 of the quickstart moved it (docs/adapter-check.md).
ADAPTER = [value + (0.06 if i % 2 else -0.04) for i, value in enumerate(BASE)]


def noise(mean_abs: float) -> FingerprintDistance:
    """Uniform noise of mean |x| m has rms 2m/√3."""
    return FingerprintDistance(0.0, mean_abs, 2 * mean_abs / 3 ** 0.5, 0)


@pytest.mark.parametrize("seed", range(20))
def test_the_right_adapter_passes_with_rounding_noise_twice_the_engines_noise_on_the_base(seed: int) -> None:
    """Issue 37: round 2's adapter on a bfloat16 engine was farther from its float32 fingerprint
    (mean 0.066) than round 1's (0.037); a fixed tolerance rejected it. With noise as large as the
    adapter's change per token it may be indistinguishable, never a mismatch."""
    expected = fingerprint(ADAPTER, BASE)
    found = match(expected, jittered(expected.logprobs[0], 0.02, seed), noise(0.01), noise_measured=True)
    assert found.verdict == "match" and found.position > 0.5, found
    bfloat16 = match(expected, jittered(expected.logprobs[0], 0.066, seed), noise(0.033), noise_measured=True)
    assert bfloat16.verdict != "mismatch", bfloat16


@pytest.mark.parametrize("seed", range(20))
def test_the_parents_weights_are_rejected_though_each_token_moved_about_its_noise(seed: int) -> None:
    expected = fingerprint(ADAPTER, BASE)
    found = match(expected, jittered(tuple(BASE), 0.02, seed), noise(0.01), noise_measured=True)
    assert found.verdict == "mismatch" and found.position < 0.5


def test_a_shift_the_engine_gives_adapter_and_parent_alike_cancels_against_its_own_parent_scores() -> None:
    """Measured on real adapters: bfloat16 placed a right adapter at 0.70 and its parent at -0.36 of the line,
    both shifted by the same rounding; against the engine's own scores of the parent it is at 1.06."""
    expected = fingerprint(ADAPTER, BASE)
    shift = [-0.3 * (a - b) for a, b in zip(ADAPTER, BASE)]
    served_adapter = [[a + s for a, s in zip(ADAPTER, shift)]]
    served_parent = [[b + s for b, s in zip(BASE, shift)]]
    assert match(expected, served_adapter, noise(0.01), True).position == pytest.approx(0.7)
    found = match(expected, served_adapter, noise(0.01), True, parent_scores=served_parent)
    assert found.parent_on_engine and found.position == pytest.approx(1.0) and found.verdict == "match"
    wrong = match(expected, served_parent, noise(0.01), True, parent_scores=served_parent)
    assert wrong.position == pytest.approx(0.0) and wrong.verdict == "mismatch"


def test_weights_between_parent_and_adapter_are_rejected() -> None:
    """A merged engine whose prefix cache still holds blocks from the old weights scores in between."""
    expected = fingerprint(ADAPTER, BASE)
    halfway = [[(a + b) / 2 for a, b in zip(ADAPTER, BASE)]]
    assert match(expected, halfway, noise(0.005), noise_measured=True).verdict == "mismatch"


def test_other_weights_far_from_both_are_rejected() -> None:
    expected = fingerprint(ADAPTER, BASE)
    other = [[value - 1.0 for value in ADAPTER]]
    found = match(expected, other, noise(0.05), noise_measured=True)
    assert found.verdict == "mismatch" and found.adapter.mean_abs > NOISE_MULTIPLE * found.noise.mean_abs


def test_an_adapter_too_close_to_its_parent_is_stored_as_indistinguishable_not_passed_silently() -> None:
    close = [value + 0.005 for value in BASE]
    expected = fingerprint(close, BASE)
    found = match(expected, jittered(tuple(close), 0.03, 0), noise(0.03), noise_measured=True)
    assert found.verdict == "indistinguishable" and found.separation < SEPARABLE_Z


def test_a_fingerprint_without_its_parent_is_checked_against_the_noise_alone() -> None:
    expected = fingerprint(ADAPTER, None)
    assert match(expected, jittered(tuple(ADAPTER), 0.001, 0), noise(0.001), noise_measured=False).verdict == "match"
    assert match(expected, [BASE], noise(0.001), noise_measured=False).verdict == "mismatch"


def test_the_trainer_records_the_parent_and_the_base_in_each_rounds_fingerprint(tiny_model, tmp_path) -> None:
    triples = [Triple("Add 2 and 3.", "", "5", None), Triple("Add 4 and 4.", "", "9", "Wrong: 4 + 4 = 8.")]
    config = CutConfig(micro_batch_size=2, positive_ratio=None, learning_rate=1e-2)
    first = train(config, str(tiny_model), triples, tmp_path / "round-1", progress=False)
    second = train(config, str(tiny_model), triples, tmp_path / "round-2", init_adapter=first.adapter_dir,
                   progress=False)
    one, two = read_fingerprint(first.adapter_dir), read_fingerprint(second.adapter_dir)
    assert one.parent_logprobs == one.base_logprobs  # a fresh LoRA continues the base model
    assert two.parent_logprobs == one.logprobs and two.base_logprobs == one.base_logprobs
    assert two.logprobs != one.logprobs


@pytest.mark.parametrize("probes", [PROBES, PROBES[:1], (("Hi?", "Hello."), ("What is 2 + 2? Say it.", "4")), None])
def test_the_probe_scored_once_for_its_shared_prefix_equals_each_sequence_scored_alone(tiny_model, probes,
                                                                                        monkeypatch) -> None:
    """score_probe runs the probes' common prefix once (its keys and values serve every probe); None:
    sequences with no common prefix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import cut.fingerprint as fingerprint

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    if probes is None:
        sequences = (ProbeSequence((5, 6, 7, 8, 9), 3), ProbeSequence((10, 11, 12), 1))
    else:
        monkeypatch.setattr(fingerprint, "PROBES", probes)
        sequences = probe_sequences(AutoTokenizer.from_pretrained(tiny_model))
    alone = []
    for sequence in sequences:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sequence.token_ids])).logits[0].float()
        logp = torch.log_softmax(logits[sequence.response_start - 1 : -1], dim=-1)
        alone.append(logp.gather(1, torch.tensor(sequence.response_ids)[:, None]).squeeze(1).tolist())
    shared = score_probe(model, sequences)
    assert [len(s) for s in shared] == [len(s) for s in alone]
    assert max(abs(a - b) for x, y in zip(shared, alone) for a, b in zip(x, y)) < 1e-4


def test_a_first_round_takes_the_base_log_probs_from_a_folder_that_carries_them(tiny_model, tmp_path) -> None:
    """The log-probs `write_base_logprobs` stores are those a first round scores, and a first round whose
    base folder carries them reads them instead of scoring the base (here: stored ones moved by 0.5)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    triples = [Triple("Add 2 and 3.", "", "5", None), Triple("Add 4 and 4.", "", "9", "Wrong: 4 + 4 = 8.")]
    config = CutConfig(micro_batch_size=2, positive_ratio=None, learning_rate=1e-2)
    scored = read_fingerprint(train(config, str(tiny_model), triples, tmp_path / "scored", progress=False).adapter_dir)
    carrying = shutil.copytree(tiny_model, tmp_path / "base")
    write_base_logprobs(AutoModelForCausalLM.from_pretrained(carrying, dtype=torch.float32),
                        AutoTokenizer.from_pretrained(carrying), carrying)
    stored = stored_base_logprobs(carrying, scored.sequences)
    assert max(abs(a - b) for x, y in zip(stored, scored.base_logprobs) for a, b in zip(x, y)) < 1e-6

    moved = tuple(tuple(value - 0.5 for value in probe) for probe in stored)
    (carrying / BASE_LOGPROBS_FILE).write_text(json.dumps(Fingerprint(scored.sequences, moved).as_dict()))
    read = read_fingerprint(train(config, str(carrying), triples, tmp_path / "read", progress=False).adapter_dir)
    assert read.base_logprobs == read.parent_logprobs == moved


@pytest.mark.parametrize("case", ["another probe", "a bfloat16 base"])
def test_stored_base_log_probs_of_another_probe_or_for_a_bfloat16_base_are_not_used(tiny_model, tmp_path,
                                                                                    case) -> None:
    import shutil

    from transformers import AutoTokenizer

    carrying = shutil.copytree(tiny_model, tmp_path / "base")
    sequences = probe_sequences(AutoTokenizer.from_pretrained(carrying))
    if case == "another probe":
        sequences = tuple(ProbeSequence(s.token_ids[:-1] + (s.token_ids[-1] + 1,), s.response_start) for s in sequences)
    moved = tuple(tuple(-5.0 for _ in s.response_ids) for s in sequences)
    (carrying / BASE_LOGPROBS_FILE).write_text(json.dumps(Fingerprint(sequences, moved).as_dict()))
    triples = [Triple("Add 2 and 3.", "", "5", None), Triple("Add 4 and 4.", "", "9", "Wrong: 4 + 4 = 8.")]
    config = CutConfig(micro_batch_size=2, positive_ratio=None, precision="bfloat16" if "bfloat16" in case else "float32")
    fingerprint = read_fingerprint(train(config, str(carrying), triples, tmp_path / "round-1", progress=False).adapter_dir)
    assert all(value != -5.0 for probe in fingerprint.base_logprobs for value in probe)
