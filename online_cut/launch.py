"""A round's training in another process: under `accelerate launch` (several GPUs, DDP), or on a
worker of a GPU pool (`online_cut.placement`).

The triples and the run's config go to files; `online-cut train` reads them and writes the
adapter, `metrics.jsonl`, `flagged.json` and `summary.json`, which are read back into the
`TrainResult` the in-process path returns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from cut.data import Triple
from cut.scoring import FlaggedToken
from cut.trainer import TrainResult
from online_cut.config import Config, dump_config

TRIPLES_FILE = "triples.jsonl"
CONFIG_FILE = "config.yaml"


class LaunchError(RuntimeError):
    """The training process failed; the message holds the end of its output."""


def write_training_inputs(work: Path, config: Config, triples: list[Triple]) -> None:
    """`triples.jsonl` (CUT paper fields) and `config.yaml` in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    (work / TRIPLES_FILE).write_text("".join(
        json.dumps({"instruction": t.instruction, "input": t.input, "output": t.response, "judgment": t.judgment,
                    "score": t.score}) + "\n"
        for t in triples
    ))
    (work / CONFIG_FILE).write_text(dump_config(config))


def train_command(config: Config, work: Path, out_dir: Path, init_adapter: Path | None) -> list[str]:
    """`online-cut train` on the inputs in `work`: under `accelerate launch` when `cut.launcher` says so."""
    command = [sys.executable]
    if config.cut.launcher == "accelerate":
        import torch

        command += ["-m", "accelerate.commands.launch", "--num_processes", str(config.cut.processes),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if not torch.cuda.is_available():
            command.append("--cpu")
    command += ["-m", "online_cut.cli", "train", "--triples", str(work / TRIPLES_FILE),
                "--config", str(work / CONFIG_FILE), "--out", str(out_dir), "--overwrite"]
    if init_adapter is not None:
        command += ["--init-adapter", str(init_adapter)]
    return command


def run_training(config: Config, work: Path, out_dir: Path, init_adapter: Path | None) -> None:
    done = subprocess.run(train_command(config, work, out_dir, init_adapter), capture_output=True, text=True)
    if done.returncode != 0:
        raise LaunchError(f"online-cut train exited with {done.returncode}:\n{done.stderr[-4000:]}")


def read_training_result(out_dir: Path) -> TrainResult:
    steps = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    flagged = {
        int(index): [FlaggedToken(**token) for token in tokens]
        for index, tokens in json.loads((out_dir / "flagged.json").read_text()).items()
    }
    summary = json.loads((out_dir / "summary.json").read_text())
    pairs = [tuple(pair) for pair in summary.get("pairs", [])]
    return TrainResult(out_dir, steps, flagged, [], summary["rows"], summary["dropped"], pairs=pairs)


def train_launched(config: Config, triples: list[Triple], out_dir: Path, init_adapter: Path | None) -> TrainResult:
    """Train like `cut.trainer.train`, in `config.cut.processes` processes started by accelerate."""
    work = out_dir.with_name(out_dir.name + ".launch")
    shutil.rmtree(work, ignore_errors=True)
    write_training_inputs(work, config, triples)
    run_training(config, work, out_dir, init_adapter)
    shutil.rmtree(work)
    return read_training_result(out_dir)
