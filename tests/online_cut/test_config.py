"""Configs are validated before any work starts, and errors name the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from online_cut.config import ConfigError, Config, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "online_cut.cli", "config", "check", str(path)],
        capture_output=True, text=True, cwd=REPO,
    )


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name: str) -> None:
    assert isinstance(load_config(REPO / "configs" / name), Config)


def test_quickstart_selects_the_cpu_defaults() -> None:
    config = load_config(REPO / "configs" / "quickstart.yaml")
    assert config.model.path is None and config.model.hub_id is None  # the shipped model
    assert config.judge.kind == "rule"
    assert config.prompts.suite == "addition"


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"cut": {"lamda": 1.2}}, "cut.lamda", "unknown key"),
        ({"sampler": {"temprature": 0.7}}, "sampler.temprature", "unknown key"),
        ({"rounds": "three"}, "rounds", "integer"),
        ({"rounds": 0}, "rounds", "greater than or equal to 1"),
        ({"cut": {"lam": 0.9}}, "cut.lam", "greater than or equal to 1"),
        ({"cut": {"alpha": -0.5}}, "cut.alpha", "greater than or equal to 0"),
        ({"model": {"path": "/no/such/model"}}, "model.path", "/no/such/model"),
        ({"sampler": {"backend": "vllm-server"}}, "sampler", "base_url"),
        ({"placement": {"train": "gpu"}}, "placement", "set `exchange`: train placed"),
        ({"placement": {"judge": ""}}, "placement.judge", "at least 1 character"),
        ({"placement": {"exchange": "exchange"}}, "placement.exchange", "an absolute folder or a URL"),
    ],
)
def test_bad_config_error_names_file_and_key(tmp_path: Path, data: dict, key: str, words: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert str(path) in message
    assert f"{key}:" in message and words in message


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    message = str(pytest.raises(ConfigError, load_config, write(tmp_path, {"rounds": 0, "cut": {"lam": 0}})).value)
    assert "rounds:" in message and "cut.lam:" in message


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("cut: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(path)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_check_prints_resolved_defaults() -> None:
    result = check(REPO / "configs" / "quickstart.yaml")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["cut"]["lora"]["r"] == 16  # a default the file does not set
    assert resolved["rounds"] == 2


def test_config_check_passes_the_gpu_config_as_shipped() -> None:
    """configs/gpu.yaml is a starting point no GPU here runs: `config check` is what a user runs on it first."""
    result = check(REPO / "configs" / "gpu.yaml")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["cut"]["lora"]["r"] <= resolved["sampler"]["max_lora_rank"]
    assert resolved["cut"]["gradient_checkpointing"] is True and resolved["sampler"]["between_rounds"] == "sleep"


def test_config_check_fails_naming_the_key(tmp_path: Path) -> None:
    result = check(write(tmp_path, {"judge": {"kind": "gpt"}}))
    assert result.returncode != 0
    assert "judge.kind:" in result.stderr and "Traceback" not in result.stderr


def test_a_lora_rank_above_what_the_lora_engine_takes_is_refused_naming_the_fix(tmp_path: Path) -> None:
    """Issue 40: a GPU run failed only when round 1's r=64 adapter was first attached to an engine of rank 16."""
    with pytest.raises(ConfigError, match=r"cut.lora.r is 64, above sampler.max_lora_rank 16: .* set "
                                          r"sampler.max_lora_rank to 64"):
        parse_config({"cut": {"lora": {"r": 64}}}, "gpu.yaml")
    assert parse_config({"cut": {"lora": {"r": 64}}, "sampler": {"backend": "vllm-merged"}}, "cpu.yaml")
    with pytest.raises(ConfigError, match=r"sampler.max_lora_rank: vLLM takes a max_lora_rank of 1, 8, 16, 32, 64, "
                                          r"128, 256, 320, 512; got 48"):
        parse_config({"sampler": {"max_lora_rank": 48}}, "gpu.yaml")


def test_data_parallel_engine_args_are_refused_in_process_with_the_way_that_works() -> None:
    with pytest.raises(ConfigError, match=r"data_parallel_size: vLLM's in-process engine refuses data parallelism .* "
                                          r"backend vllm-server"):
        parse_config({"sampler": {"engine_args": {"data_parallel_size": 2}}}, "gpu.yaml")


@pytest.mark.parametrize(("backend", "dtype"), [("vllm-lora", "bfloat16"), ("vllm-merged", "float32"),
                                              ("transformers", "float32")])
def test_auto_dtype_on_a_cpu_with_bfloat16_keeps_merged_weights_in_float32(monkeypatch, backend, dtype) -> None:
    """Merged weights rounded to bfloat16 lose part of a round's change, and the adapter check rejected the right
    adapter of a `make demo` on an AMX machine (docs/adapter-check.md)."""
    import torch

    from samplers.factory import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_dtype("auto", backend) == dtype
    assert resolve_dtype("bfloat16", "vllm-merged") == "bfloat16"  # asked for, not `auto`


@pytest.mark.parametrize(("native", "dtype"), [(True, "bfloat16"), (False, "float16")])
def test_auto_dtype_on_a_gpu_takes_bfloat16_only_where_the_card_computes_it(monkeypatch, native, dtype) -> None:
    """Issue 40: torch counts emulated bfloat16 (T4, V100), which vLLM refuses below compute capability 8.0."""
    import torch

    from cut.logprobs import autocast_for
    from samplers.factory import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert resolve_dtype("auto", "vllm-lora") == dtype
    with autocast_for(torch.device("cuda"), "auto") as autocast:
        assert autocast.fast_dtype == torch.bfloat16 and autocast._enabled is native
