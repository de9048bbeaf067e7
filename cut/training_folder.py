"""The training folder: how a round's training in another process (under `accelerate launch`, or
on a work pool's worker) gets its inputs and gives back its results.

    <work>/triples.jsonl   the triples, CUT paper fields     write_inputs → `online-cut train --triples`
    <work>/config.yaml     the run's config text              write_inputs → `online-cut train --config`
    <out>/                 the adapter, metrics.jsonl,        write_result (by `online-cut train`) → read_result
                           flagged.json, summary.json
                           [, refinements.jsonl for ilf]
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cut.machines import read_machines
from formats.triple_file import write_records

if TYPE_CHECKING:  # torch comes with these
    from cut.data import Triple
    from cut.trainer import TrainResult

log = logging.getLogger(__name__)

TRIPLES_FILE = "triples.jsonl"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
FLAGGED_FILE = "flagged.json"
SUMMARY_FILE = "summary.json"
REFINEMENTS_FILE = "refinements.jsonl"


class LaunchError(RuntimeError):
    """The training process failed; the message holds the end of its output."""


def write_inputs(work: Path, config_text: str, triples: list[Triple]) -> None:
    """`triples.jsonl` and `config.yaml` (the YAML text of the run's config) in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    write_records(work / TRIPLES_FILE, [
        {"instruction": t.instruction, "input": t.input, "output": t.response, "judgment": t.judgment, "score": t.score,
         "spans": [span.model_dump() for span in t.spans], "truncated": t.truncated}
        for t in triples
    ], format="jsonl")
    (work / CONFIG_FILE).write_text(config_text)


def write_result(out_dir: Path, result: TrainResult, *, refinements: list[dict] | None = None,
                 source: dict[str, Any] | None = None) -> None:
    """What `read_result` reads back, beside the adapter in `out_dir`; `source` (e.g. the query the triples came
    from) goes into summary.json."""
    (out_dir / METRICS_FILE).write_text("".join(json.dumps(step) + "\n" for step in result.steps))
    flagged = {str(i): [asdict(token) for token in tokens] for i, tokens in result.flagged.items()}
    (out_dir / FLAGGED_FILE).write_text(json.dumps(flagged, indent=1))
    if refinements is not None:
        (out_dir / REFINEMENTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in refinements))
    (out_dir / SUMMARY_FILE).write_text(
        json.dumps({**(source or {}), "rows": result.rows, "dropped": result.dropped, "pairs": result.pairs,
                    "detection": result.detection and asdict(result.detection), "processes": result.processes})
    )


def read_result(out_dir: Path) -> TrainResult:
    """The `TrainResult` an in-process training would have returned, from what `write_result` wrote."""
    from cut.scoring import Detection, FlaggedToken
    from cut.trainer import TrainResult

    steps = [json.loads(line) for line in (out_dir / METRICS_FILE).read_text().splitlines()]
    flagged = {
        int(index): [FlaggedToken(**token) for token in tokens]
        for index, tokens in json.loads((out_dir / FLAGGED_FILE).read_text()).items()
    }
    summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    pairs = [tuple(pair) for pair in summary.get("pairs", [])]
    detection = summary.get("detection")
    return TrainResult(out_dir, steps, flagged, [], summary["rows"], summary["dropped"], pairs=pairs,
                       detection=detection and Detection(**detection), processes=summary["processes"])


def train_command(work: Path, out_dir: Path, init_adapter: Path | None, *, launcher: str, processes: int,
                  accelerate_config: Path | None = None) -> list[str]:
    """`online-cut train` on the inputs in `work`, in `processes` processes when `launcher` is accelerate:
    `accelerate launch` where there are GPUs (a process a card); on a CPU, where `accelerate launch --cpu`
    starts one process whatever it is asked for, torchrun, whose processes the trainer makes one gloo group.
    With `accelerate_config`, this machine's share of the machines it describes (`cut.machines`)."""
    command = [sys.executable]
    if launcher == "accelerate":
        import torch

        if torch.cuda.is_available() and accelerate_config is not None:
            command += ["-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
        elif torch.cuda.is_available():
            command += ["-m", "accelerate.commands.launch", "--num_processes", str(processes),
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        elif accelerate_config is not None:
            machines = read_machines(accelerate_config)
            command += ["-m", "torch.distributed.run", "--nnodes", str(machines.num_machines),
                        "--node_rank", str(machines.machine_rank), "--master_addr", machines.main_process_ip,
                        "--master_port", str(machines.main_process_port),
                        "--nproc_per_node", str(machines.processes_per_machine)]
        else:
            command += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += ["-m", "online_cut.cli", "train", "--triples", str(work / TRIPLES_FILE),
                "--config", str(work / CONFIG_FILE), "--out", str(out_dir), "--overwrite"]
    if init_adapter is not None:
        command += ["--init-adapter", str(init_adapter)]
    return command


# torchrun's summary of a failed launch names the first process that failed ("Root Cause").
_FAILED_PROCESS = re.compile(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*exitcode\s*:\s*(-?\d+)")
_SIGNAL = re.compile(r"Signal \d+ \((SIG\w+)\)")


def launch_training(work: Path, out_dir: Path, init_adapter: Path | None, *, launcher: str, processes: int,
                    accelerate_config: Path | None = None) -> None:
    """Run `train_command` and wait for it; a failed launch raises `LaunchError` naming what failed."""
    command = train_command(work, out_dir, init_adapter, launcher=launcher, processes=processes,
                            accelerate_config=accelerate_config)
    if accelerate_config is not None:
        log.info("training on the machines of %s; each other machine runs, with its own file at that path: %s",
                 accelerate_config, shlex.join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise LaunchError(failure_message(done.returncode, done.stderr, processes))


def failure_message(returncode: int, stderr: str, processes: int) -> str:
    """What failed: the process the launcher blames first (its rank, and the signal or exit code that ended it),
    then the end of the output."""
    tail = f"online-cut train exited with {returncode}:\n{stderr[-4000:]}"
    blamed = _FAILED_PROCESS.search(stderr, max(stderr.rfind("Root Cause"), 0))
    if blamed is None:
        return tail
    signal = _SIGNAL.search(stderr, blamed.end())
    how = f"killed by {signal.group(1)}" if signal else f"exit code {blamed.group(2)}"
    return f"training process rank {blamed.group(1)} of {processes} failed ({how}); {tail}"
