"""`online-cut train` end to end: a real file, a real adapter, and vLLM (CPU) sampling with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ONLINE_CUT = str(Path(sys.executable).with_name("online-cut"))

VLLM_WITH_ADAPTER = """
import sys
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
if __name__ == "__main__":
    model, adapter, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
    llm = LLM(model=model, dtype="bfloat16", max_model_len=512, kv_cache_memory_bytes=256 * 2**20, enforce_eager=True,
              enable_lora=True, max_lora_rank=rank)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    out = llm.chat([messages], SamplingParams(temperature=0, max_tokens=8), lora_request=LoRARequest("cut", 1, adapter))
    print("TOKENS:" + str(len(out[0].outputs[0].token_ids)))
"""


def write_config(path: Path, model: Path, **cut) -> Path:
    path.write_text(yaml.safe_dump({"model": {"path": str(model)}, "cut": cut}))
    return path


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ONLINE_CUT, "train", *args], capture_output=True, text=True, timeout=600)


def test_bad_record_fails_naming_file_and_record_and_writes_nothing(tiny_model, tmp_path):
    triples = tmp_path / "triples.json"
    triples.write_text(json.dumps([{"instruction": "a", "output": "b", "judgment": None}, {"instruction": "a"}]))
    config = write_config(tmp_path / "run.yaml", tiny_model)
    result = run_train("--triples", str(triples), "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "triples.json: record 2: output: Field required" in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_explains_every_option():
    result = subprocess.run([ONLINE_CUT, "train", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--triples", "--sql", "--db", "--config", "--out", "--init-adapter", "--limit", "--overwrite",
                   "--objective", "--reduction"):
        assert option in result.stdout
    assert "arrives with" not in result.stdout


def test_dpo_trains_offline_on_pairs_from_the_same_instruction(tiny_model, tmp_path):
    records = [
        {"instruction": "What is 2 + 3?", "output": "5", "judgment": None},
        {"instruction": "What is 2 + 3?", "output": "6", "judgment": "Wrong: 2 + 3 = 5."},
        {"instruction": "What is 4 + 4?", "output": "9", "judgment": "Wrong: 4 + 4 = 8."},
        {"instruction": "What is 1 + 1?", "output": "2", "judgment": None},
    ]
    triples = tmp_path / "triples.json"
    triples.write_text(json.dumps(records))
    config = write_config(tmp_path / "run.yaml", tiny_model, max_length=64)
    out = tmp_path / "adapter"
    result = run_train("--triples", str(triples), "--config", str(config), "--out", str(out), "--objective", "dpo")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text()) == {"rows": 2, "dropped": 0, "pairs": [[0, 1]], "detection": None,
                                                            "processes": 1}
    [step] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert step["pairs"] == 1 and {"loss", "reward_margin", "reward_accuracy"} <= set(step)


def test_an_unknown_objective_fails_before_training(tiny_model, tmp_path):
    triples = tmp_path / "triples.json"
    triples.write_text(json.dumps([{"instruction": "a", "output": "b", "judgment": None}]))
    config = write_config(tmp_path / "run.yaml", tiny_model)
    result = run_train("--triples", str(triples), "--config", str(config), "--out", str(tmp_path / "out"),
                       "--objective", "ppo")
    assert result.returncode != 0 and "--objective/--reduction" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_trained_adapter_loads_and_samples_in_vllm(tiny_model, cut_paper_iter1, tmp_path):
    config = write_config(tmp_path / "run.yaml", tiny_model, max_length=256, micro_batch_size=8)
    out = tmp_path / "adapter"
    result = run_train("--triples", str(cut_paper_iter1), "--limit", "40", "--config", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps and all(step["loss"] > 0 for step in steps)
    assert json.loads((out / "flagged.json").read_text())

    script = tmp_path / "sample.py"
    script.write_text(VLLM_WITH_ADAPTER)
    rank = json.loads((out / "adapter_config.json").read_text())["r"]
    sampled = subprocess.run(
        [sys.executable, str(script), str(tiny_model), str(out), str(rank)], capture_output=True, text=True, timeout=600
    )
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert int(sampled.stdout.split("TOKENS:", 1)[1].split()[0]) > 0



@pytest.mark.slow
def test_the_shipped_model_trains_on_two_processes_started_by_torchrun(shipped_model, cut_paper_iter1, tmp_path):
    """Issue 40's bar, on the real model: `torchrun --nproc_per_node 2 -m online_cut.cli train` is one DDP
    group of 2 (each process says so), and the main process alone writes the adapter (`make test-slow`)."""
    config = write_config(tmp_path / "run.yaml", shipped_model, micro_batch_size=2, max_length=256, positive_ratio=None)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "online_cut.cli",
         "train", "--triples", str(cut_paper_iter1), "--limit", "8", "--config", str(config), "--out",
         str(tmp_path / "adapter")],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = dict(re.findall(r"training process (\d) of 2: (\d+ steps done.*)", result.stderr))
    steps = len((tmp_path / "adapter" / "metrics.jsonl").read_text().splitlines())
    assert reports == {"0": f"{steps} steps done; it writes the adapter", "1": f"{steps} steps done"}
    summary = json.loads((tmp_path / "adapter" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["rows"] > 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
