"""The shipped model converts once into a folder transformers and vLLM load; bad GGUF is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cut.fingerprint import BASE_LOGPROBS_FILE, probe_sequences, score_probe, stored_base_logprobs
from online_cut.base_model import (
    PREPARED_MARKER,
    ModelPrepareError,
    is_prepared,
    prepare_from_gguf,
    shipped_gguf_path,
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "online_cut.cli", *args], capture_output=True, text=True)


def test_missing_gguf_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ModelPrepareError, match="absent.gguf: GGUF file not found"):
        prepare_from_gguf(tmp_path / "absent.gguf", tmp_path / "out")


def test_non_gguf_file_is_refused_before_loading(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelPrepareError, match="model.gguf: not a GGUF file"):
        prepare_from_gguf(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_gguf_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with shipped_gguf_path().open("rb") as src:
        truncated.write_bytes(src.read(4096))
    result = run_cli("model", "prepare", "--gguf", str(truncated), "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "truncated.gguf: cannot read GGUF model" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_prepare_is_idempotent(shipped_model: Path) -> None:
    before = (shipped_model / "model.safetensors").stat().st_mtime_ns
    result = run_cli("model", "prepare")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == shipped_model
    assert (shipped_model / "model.safetensors").stat().st_mtime_ns == before
    assert is_prepared(shipped_model) and (shipped_model / BASE_LOGPROBS_FILE).is_file()


def test_prepare_gives_a_folder_prepared_before_them_the_probes_base_log_probs(tiny_model: Path, tmp_path: Path) -> None:
    """What a first round reads instead of scoring the base (cut/fingerprint.py), equal to its own scores."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = shutil.copytree(tiny_model, tmp_path / "prepared-before")
    (folder / PREPARED_MARKER).write_text("{}\n")
    assert prepare_from_gguf(tmp_path / "not-read.gguf", folder) == folder
    sequences = probe_sequences(AutoTokenizer.from_pretrained(folder))
    scored = score_probe(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), sequences)
    stored = stored_base_logprobs(folder, sequences)
    assert [len(probe) for probe in stored] == [len(probe) for probe in scored]
    assert max(abs(a - b) for x, y in zip(stored, scored) for a, b in zip(x, y)) < 1e-6


def test_transformers_answers_a_chat_question(shipped_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(shipped_model)
    model = AutoModelForCausalLM.from_pretrained(shipped_model)
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_tiny_model_has_the_shipped_tokenizer(tiny_model: Path, shipped_model: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(tiny_model).num_hidden_layers == 2
    text = "What is 47 + 38?"
    assert AutoTokenizer.from_pretrained(tiny_model)(text).input_ids == AutoTokenizer.from_pretrained(shipped_model)(text).input_ids


@pytest.mark.integration
def test_vllm_cpu_answers_a_chat_question(shipped_merged_engine) -> None:
    from samplers.records import Prompt, SamplingSettings

    sampler = shipped_merged_engine.sampler
    sampler.attach(None)  # the converted model's own weights
    (sample,) = sampler.sample([Prompt(QUESTION[0]["content"])], SamplingSettings(n=1, temperature=0.0, max_tokens=16))
    assert "Paris" in sample.text
