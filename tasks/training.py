"""Where a round trains: in this process, in `cut.processes` processes under `accelerate launch`, or on
a worker of the `placement.train` pool. `trainer_for` picks the callable the train step is given."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cut import training_folder
from online_cut.config import Config, dump_config
from rounds.train import Trainer
from tasks.placement import step_url, train_on_pool

if TYPE_CHECKING:
    from cut.data import Triple
    from cut.trainer import TrainResult


def train_in_process(config: Config, triples: list[Triple], out_dir: Path, init_adapter: Path | None) -> TrainResult:
    from cut.trainer import release_device_memory, train

    try:
        return train(config.cut, config.model.name_or_path(), triples, out_dir, init_adapter=init_adapter)
    finally:
        release_device_memory()  # before the sampler, asleep in this process, wakes on the same card


def train_launched(config: Config, triples: list[Triple], out_dir: Path, init_adapter: Path | None) -> TrainResult:
    """Train like `cut.trainer.train`, in `config.cut.processes` processes started by accelerate."""
    work = out_dir.with_name(out_dir.name + ".launch")
    shutil.rmtree(work, ignore_errors=True)
    training_folder.write_inputs(work, dump_config(config), triples)
    training_folder.launch_training(work, out_dir, init_adapter, launcher=config.cut.launcher,
                                    processes=config.cut.processes,
                                    accelerate_config=config.cut.accelerate_config)
    shutil.rmtree(work)
    return training_folder.read_result(out_dir)


def trainer_for(config: Config, run: str, round: int) -> Trainer:
    """The trainer the config asks for: `placement.train` first, then `cut.launcher`."""
    if config.placement.train is not None:
        return partial(train_on_pool, url=step_url(config.placement, run, round, "train"))
    if config.cut.launcher == "accelerate":
        return train_launched
    return train_in_process

