"""bench/train_step.py's random-model path, the one a GPU machine runs, on a CPU with a tiny shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cut.config import CutConfig

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from train_step import StepSettings  # noqa: E402

# What the GPU machine lacks: the path must not import any of it.
ABSENT_THERE = ["pydantic", "vllm", "duckdb", "prefect", "openai", "online_cut", "storage", "formats", "rounds",
                "samplers", "judges", "flows", "tasks"]
BLOCKER = """
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {absent!r}:
            raise ImportError(f'{{name}} is not on the GPU machine')
sys.meta_path.insert(0, Absent())
sys.argv = ['train_step.py', '--model-shape', 'tiny', '--max-length', '64']
sys.path.insert(0, {folder!r})  # as when run as a script
runpy.run_path({script!r}, run_name='__main__')
"""


def test_the_random_model_path_imports_only_cut_and_the_training_libraries_and_reports_its_figures() -> None:
    code = BLOCKER.format(absent=ABSENT_THERE, script=str(REPO / "bench" / "train_step.py"), folder=str(REPO / "bench"))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["model_shape"] == "tiny" and result["sequences"] == 8 + 6  # 3 in 4 triples Align-N
    assert result["padded_length"] == 64 and result["response_tokens"] == 14 * 32
    assert result["cut_over_mle_step"] > 0 and 0 < result["loss_memory_ratio"] < 1
    assert 0 < result["flops_share_of_matmul_peak"] and result["step_peak_memory_gib"] > 0
    assert result["tokens_per_s"] == 14 * 64 / result["cut_step_s"]


def test_the_step_settings_are_the_training_configs_defaults() -> None:
    assert StepSettings() == StepSettings.of(CutConfig())
