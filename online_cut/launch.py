"""A round's training through `accelerate launch` (several GPUs, DDP) instead of in process.

The triples and the run's config go to files beside the adapter folder; `online-cut train`
runs under `accelerate launch` and writes the adapter, `metrics.jsonl`, `flagged.json` and
`summary.json`, which are read back into the `TrainResult` the in-process path returns.
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


class LaunchError(RuntimeError):
    """`accelerate launch` failed; the message holds the end of its output."""


def launch_command(config: Config, triples_file: Path, config_file: Path, out_dir: Path,
                   init_adapter: Path | None) -> list[str]:
    import torch

    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(config.cut.processes),
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not torch.cuda.is_available():
        accelerate.append("--cpu")
    train = ["-m", "online_cut.cli", "train", "--triples", str(triples_file), "--config", str(config_file),
             "--out", str(out_dir), "--overwrite"]
    if init_adapter is not None:
        train += ["--init-adapter", str(init_adapter)]
    return accelerate + train


def train_launched(config: Config, triples: list[Triple], out_dir: Path, init_adapter: Path | None) -> TrainResult:
    """Train like `cut.trainer.train`, in `config.cut.processes` processes started by accelerate."""
    work = out_dir.with_name(out_dir.name + ".launch")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    triples_file, config_file = work / "triples.jsonl", work / "config.yaml"
    triples_file.write_text("".join(
        json.dumps({"instruction": t.instruction, "input": t.input, "output": t.response, "judgment": t.judgment}) + "\n"
        for t in triples
    ))
    config_file.write_text(dump_config(config))
    done = subprocess.run(launch_command(config, triples_file, config_file, out_dir, init_adapter),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise LaunchError(f"accelerate launch exited with {done.returncode}:\n{done.stderr[-4000:]}")
    steps = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    flagged = {
        int(index): [FlaggedToken(**token) for token in tokens]
        for index, tokens in json.loads((out_dir / "flagged.json").read_text()).items()
    }
    summary = json.loads((out_dir / "summary.json").read_text())
    shutil.rmtree(work)
    return TrainResult(out_dir, steps, flagged, [], summary["rows"], summary["dropped"])
