"""The vLLM back-ends on the real CPU engine and server: the round's adapter is the one sampled.

Three engines serve the module (each start costs about a minute here): an in-process engine
with LoRA (LoRARequest), and the session's engine whose weights are swapped by merging (merged
in place) and OpenAI-compatible server (tests/conftest.py). Float32 keeps the two in-process ways comparable token for
token; the adapters are small random LoRAs (lora_B ~ N(0, 0.02²)) standing in for trained ones.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cut.fingerprint import read_fingerprint
from samplers.base import AdapterCheck, AdapterMismatchError, AdapterNotAppliedError, Sampler
from samplers.config import SamplerConfig
from samplers.factory import open_sampler
from engines import open_in_process
from random_adapter import write_random_adapter
from samplers.records import Prompt, SamplingSettings
from samplers.vllm_inprocess import VllmInProcessSampler

pytestmark = pytest.mark.integration

PROMPTS = [
    Prompt("What is 47 + 38? Reply with just the number."),
    Prompt("Describe the moon. Answer in at most 10 words."),
    Prompt("Name three fruits."),
    Prompt("Why does sleep matter?"),
    Prompt("Write a sentence about trains."),
    Prompt("What is 19 + 64? Reply with just the number."),
]
GREEDY = SamplingSettings(n=1, temperature=0.0, max_tokens=10)
# A float32 engine scores the probe within this of the trainer's float32 log-probs (mean |Δ log p|).
FLOAT32_NOISE = 1e-3


@pytest.fixture(scope="module")
def adapters(shipped_model, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return {
        "a1": write_random_adapter(shipped_model, folder / "a1", seed=1, scale=0.02),
        "a2": write_random_adapter(shipped_model, folder / "a2", seed=2, scale=0.02),
        "zeroed": write_random_adapter(shipped_model, folder / "zeroed", seed=1, zero=True),
    }


@dataclass
class Rounds:
    """Greedy outputs of the base and of three rounds, and what each round's attach checked."""

    outputs: dict[str, list[str]]
    checks: dict[str, AdapterCheck]
    engines_started: int  # during the rounds


def greedy(sampler: Sampler) -> list[str]:
    return [sample.text for sample in sampler.sample(PROMPTS, GREEDY)]


def run_rounds(sampler: Sampler, adapters: dict[str, Path], workdir: Path) -> Rounds:
    """Base, then a1, a2 and a1 again, each written into the same folder as a trainer would
    overwrite its output: only versioned names keep the engine from serving stale weights."""
    starts_before = VllmInProcessSampler.engine_starts
    sampler.attach(None)
    outputs, checks = {"base": greedy(sampler)}, {}
    round_dir = workdir / "round-adapter"
    for label, source in (("a1", adapters["a1"]), ("a2", adapters["a2"]), ("a1-again", adapters["a1"])):
        shutil.rmtree(round_dir, ignore_errors=True)
        shutil.copytree(source, round_dir)
        checks[label] = sampler.attach(round_dir, name=label)
        outputs[label] = greedy(sampler)
    return Rounds(outputs, checks, VllmInProcessSampler.engine_starts - starts_before)


@pytest.fixture(scope="module")
def lora(shipped_model):
    with open_in_process("vllm-lora", shipped_model) as opened:
        yield opened


@pytest.fixture(scope="module")
def merged(shipped_merged_engine):
    return shipped_merged_engine


@pytest.fixture(scope="module")
def lora_rounds(lora, adapters, tmp_path_factory) -> Rounds:
    return run_rounds(lora.sampler, adapters, tmp_path_factory.mktemp("lora-rounds"))


@pytest.fixture(scope="module")
def merged_rounds(merged, adapters, tmp_path_factory) -> Rounds:
    return run_rounds(merged.sampler, adapters, tmp_path_factory.mktemp("merged-rounds"))


def assert_each_round_used_its_adapter(rounds: Rounds) -> None:
    outputs = rounds.outputs
    assert outputs["a1"] != outputs["base"], "a non-zero adapter left every greedy output as the base's"
    assert outputs["a2"] != outputs["a1"], "the second round's adapter gave the first round's outputs"
    assert outputs["a1-again"] == outputs["a1"], "re-attaching a1 in the same folder served other weights"
    for label, check in rounds.checks.items():
        assert check.changed and check.adapter == label and not check.adapter_weights_zero
        assert check.fingerprint is not None and check.fingerprint.verdict == "match"
        assert check.fingerprint.noise_measured and check.fingerprint.adapter.mean_abs <= check.fingerprint.tolerance


def test_lora_request_rounds_each_sample_their_own_adapter(lora_rounds):
    assert_each_round_used_its_adapter(lora_rounds)


def test_merged_in_place_rounds_each_sample_their_own_adapter(merged_rounds):
    assert_each_round_used_its_adapter(merged_rounds)


def test_merged_in_place_and_lora_request_give_the_same_greedy_outputs(lora_rounds, merged_rounds):
    for label in ("base", "a1", "a2"):
        same = sum(a == b for a, b in zip(lora_rounds.outputs[label], merged_rounds.outputs[label]))
        assert same >= 0.8 * len(PROMPTS), (label, lora_rounds.outputs[label], merged_rounds.outputs[label])


def test_one_engine_serves_every_round(lora, merged, lora_rounds, merged_rounds):
    assert lora.engines_started == merged.engines_started == 1
    assert lora_rounds.engines_started == merged_rounds.engines_started == 0


@pytest.mark.parametrize("backend", ["lora", "merged"])
def test_zeroed_adapter_passed_as_trained_fails_loudly(request, backend, adapters):
    sampler = request.getfixturevalue(backend).sampler
    with pytest.raises(AdapterNotAppliedError, match=r"adapter 'round-7' .* lora_B weights are all zero"):
        sampler.attach(adapters["zeroed"], name="round-7")
    sampler.attach(None)


@pytest.mark.parametrize("backend", ["lora", "merged"])
def test_the_previous_rounds_adapter_fails_against_this_rounds_fingerprint(request, backend, adapters):
    sampler = request.getfixturevalue(backend).sampler
    with pytest.raises(AdapterMismatchError, match=r"adapter 'round-2': .* mean \|Δ log p\| = \S+ \(max \S+\) away .* \S+ from its parent's, at \S+ of the way"):
        sampler.attach(adapters["a1"], name="round-2", fingerprint=read_fingerprint(adapters["a2"]))


@pytest.mark.parametrize("backend", ["lora", "merged"])
def test_zeroed_adapter_fails_the_fingerprint_of_the_trained_one(request, backend, adapters):
    sampler = request.getfixturevalue(backend).sampler
    with pytest.raises(AdapterMismatchError, match="not serving the weights this adapter was trained to"):
        sampler.attach(adapters["zeroed"], name="round-2", expect_change=False, fingerprint=read_fingerprint(adapters["a1"]))


def test_merged_engine_reloaded_without_a_prefix_cache_reset_fails(merged, adapters, monkeypatch):
    sampler = merged.sampler
    sampler.attach(adapters["a1"], name="round-1")  # the probe's shared first block now cached under a1
    monkeypatch.setattr(sampler._engine(), "reset_prefix_cache", lambda *args, **kwargs: True)
    with pytest.raises(AdapterMismatchError, match="adapter 'round-2'"):
        sampler.attach(adapters["a2"], name="round-2")
    monkeypatch.undo()
    assert sampler.attach(adapters["a2"], name="round-2").fingerprint.adapter.mean_abs <= FLOAT32_NOISE


def test_samples_record_index_finish_reason_tokens_and_adapter(merged, adapters):
    merged.sampler.attach(adapters["a1"], name="round-1")
    settings = SamplingSettings(n=2, temperature=0.8, max_tokens=6, stop=("\n",))
    samples = merged.sampler.sample(PROMPTS[:2], settings)
    assert [(s.prompt_id, s.sample_index) for s in samples] == [(p.prompt_id, i) for p in PROMPTS[:2] for i in (0, 1)]
    for s in samples:
        assert s.adapter == "round-1" and s.params == settings.as_dict()
        assert s.prompt_tokens > 10 and 1 <= s.completion_tokens <= 6
        assert s.finish_reason == "stop" or s.completion_tokens == 6


def test_server_loads_each_round_adapter_at_run_time_and_unloads_the_superseded(shipped_vllm_server, adapters,
                                                                                  lora_rounds):
    config = SamplerConfig(backend="vllm-server", base_url=shipped_vllm_server, concurrency=4)
    with open_sampler(config, "unused: the server's model") as sampler:
        sampler.attach(None)
        base = greedy(sampler)
        a1_check = sampler.attach(adapters["a1"], name="a1")
        a1 = greedy(sampler)
        with pytest.raises(AdapterMismatchError, match="adapter 'a2-as-a1'"):
            sampler.attach(adapters["a2"], name="a2-as-a1", fingerprint=read_fingerprint(adapters["a1"]))
        sampler.attach(adapters["a2"], name="a2")
        served = {model["id"] for model in httpx.get(f"{shipped_vllm_server}/models").json()["data"]}
        with pytest.raises(AdapterNotAppliedError):
            sampler.attach(adapters["zeroed"], name="zeroed")
    assert a1_check.changed and a1 != base
    # A float32 server: its scores are as close to the trainer's as the in-process engine's.
    assert a1_check.fingerprint.verdict == "match" and a1_check.fingerprint.adapter.mean_abs <= FLOAT32_NOISE
    # Same weights, same float32 engine as the in-process LoRA path.
    assert sum(x == y for x, y in zip(a1, lora_rounds.outputs["a1"])) >= 0.8 * len(PROMPTS)
    assert sum(x == y for x, y in zip(base, lora_rounds.outputs["base"])) >= 0.8 * len(PROMPTS)
    assert any(name.startswith("a2-v") for name in served) and not any(name.startswith("a1-v") for name in served)


def test_sleep_between_rounds_on_a_cpu_keeps_the_engine_warm_and_says_so(shipped_merged_engine, caplog) -> None:
    sampler = shipped_merged_engine.sampler
    configured = sampler.config
    starts = VllmInProcessSampler.engine_starts
    sampler.config = configured.model_copy(update={"between_rounds": "sleep"})
    try:
        with caplog.at_level(logging.INFO, logger="samplers.vllm_inprocess"):
            sampler.pause()
        assert "vLLM sleep mode is not available on this platform: the engine stays warm" in caplog.text
        [sample] = sampler.sample([Prompt("What is 2 + 2?")], SamplingSettings(n=1, temperature=0.0, max_tokens=4))
        assert sample.text and VllmInProcessSampler.engine_starts == starts  # the same engine answered
    finally:
        sampler.config = configured
