"""`online-cut-step`: a round's step that the config places on a work pool, run there by a worker.

The round starts it with `run_deployment` (tasks/placement.py, which lays out the exchange
folder); this side reads the step's inputs from `<exchange>/in`, runs the step and writes
`<exchange>/out`. The worker never opens the store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from prefect import flow

from cut import training_folder
from judges.judgment import JudgeItem
from online_cut.config import Config, load_config
from online_cut.logs import show_progress
from online_cut.watchdog import guard_children
from storage.remote_folders import get_folder, join, put_folder
from tasks.judge_setup import configured_judge
from tasks.placement import CONFIG_FILE, INIT_ADAPTER, ITEMS_FILE, JUDGMENTS_FILE, STEP_FLOW


def _judge(config: Config, inputs: Path, outputs: Path) -> None:
    items = [JudgeItem.model_validate_json(line) for line in (inputs / ITEMS_FILE).read_text().splitlines()]
    judgments = configured_judge(config.judge).judge_many_sync(items)
    (outputs / JUDGMENTS_FILE).write_text("".join(j.model_dump_json() + "\n" for j in judgments))


def _train(config: Config, inputs: Path, outputs: Path) -> None:
    init_adapter = inputs / INIT_ADAPTER
    training_folder.launch_training(inputs, outputs, init_adapter if init_adapter.is_dir() else None,
                                    launcher=config.cut.launcher, processes=config.cut.processes,
                                    accelerate_config=config.cut.accelerate_config)


STEPS: dict[str, Callable[[Config, Path, Path], None]] = {"judge": _judge, "train": _train}


@flow(name=STEP_FLOW, flow_run_name="{step}")
def online_cut_step(step: Literal["judge", "train"], exchange: str) -> None:
    """Run a placed `step` on its inputs under `exchange`/in and write its outputs to `exchange`/out."""
    show_progress()
    guard_children()
    with tempfile.TemporaryDirectory() as staging:
        inputs, outputs = Path(staging) / "in", Path(staging) / "out"
        get_folder(join(exchange, "in"), inputs)
        outputs.mkdir()
        STEPS[step](load_config(inputs / CONFIG_FILE), inputs, outputs)
        put_folder(outputs, join(exchange, "out"))
