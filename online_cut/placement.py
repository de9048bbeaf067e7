"""Steps placed on Prefect work pools: judging on a CPU pool, training on a GPU pool.

A placed step is a flow run of the deployment `online-cut-step/<pool>` (prefect.yaml),
started by the round with `run_deployment` and waited for. Its inputs and outputs pass
through `placement.exchange`, a folder or fsspec URL the flow and the pool's workers reach:

    <exchange>/<run>/round-<r>/<step>/in/   config.yaml, and items.jsonl (judge) or
                                             triples.jsonl [+ init-adapter/] (train)
    <exchange>/<run>/round-<r>/<step>/out/  judgments.jsonl (judge) or the adapter folder
                                             with metrics.jsonl, flagged.json, summary.json (train)

The store stays with the flow — DuckDB has one writer — and the worker never opens it: the
flow writes what the step sent back. Only the step's name and its exchange URL travel as
flow-run parameters; a judge's API key is read on the worker (its environment or Secret block).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from judges.judgment import JudgeItem, Judgment
from online_cut.config import Config, PlacementConfig, dump_config, load_config
from storage.shared import get_folder, join, put_folder, remove_folder

if TYPE_CHECKING:  # torch comes with these; the judging worker never needs it
    from cut.data import Triple
    from cut.trainer import TrainResult

STEP_FLOW = "online-cut-step"
ITEMS_FILE = "items.jsonl"
JUDGMENTS_FILE = "judgments.jsonl"
INIT_ADAPTER = "init-adapter"


class PlacementError(RuntimeError):
    """A placed step cannot run: a pool or deployment missing, or the step's flow run failed."""


def deployment_name(pool: str) -> str:
    return f"{STEP_FLOW}/{pool}"


def step_url(placement: PlacementConfig, run: str, round: int, step: str) -> str:
    return join(placement.exchange, run, f"round-{round}", step)


def check_pools(placement: PlacementConfig) -> None:
    """Fail before any work when a placed step's pool, or its `online-cut-step/<pool>` deployment,
    is missing on the Prefect server."""
    pools = placement.pools()
    if not pools:
        return
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        placed = ", ".join(f"placement.{step}" for step in pools)
        raise PlacementError(f"{placed}: placed steps need the Prefect server the pools' workers poll; set PREFECT_API_URL")
    with get_client(sync_client=True) as client:
        for step, pool in pools.items():
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                known = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
                raise PlacementError(
                    f"placement.{step}: work pool {pool!r} does not exist on the Prefect server "
                    f"(pools there: {known}); create it with `prefect work-pool create {pool} --type process`"
                ) from None
            try:
                deployment = client.read_deployment_by_name(deployment_name(pool))
            except ObjectNotFound:
                raise PlacementError(
                    f"placement.{step}: no deployment {deployment_name(pool)!r} for pool {pool!r}; "
                    f"register it with `prefect --no-prompt deploy --name {pool}` (prefect.yaml)"
                ) from None
            if deployment.work_pool_name != pool:
                raise PlacementError(
                    f"placement.{step}: deployment {deployment_name(pool)!r} runs on pool "
                    f"{deployment.work_pool_name!r}, not {pool!r}"
                )


def _run_on_pool(pool: str, step: str, url: str) -> None:
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment_name(pool), parameters={"step": step, "exchange": url})
    if not flow_run.state.is_completed():
        raise PlacementError(
            f"{step} on pool {pool!r}: flow run {flow_run.name!r} ended {flow_run.state.name}: {flow_run.state.message}"
        )


def judge_on_pool(config: Config, items: list[JudgeItem], url: str) -> list[Judgment]:
    """Judgments of `items`, in order, made by a worker of the judge's pool."""
    remove_folder(url)
    with tempfile.TemporaryDirectory() as staging:
        inputs = Path(staging)
        (inputs / "config.yaml").write_text(dump_config(config))
        (inputs / ITEMS_FILE).write_text("".join(item.model_dump_json() + "\n" for item in items))
        put_folder(inputs, join(url, "in"))
    _run_on_pool(config.placement.judge, "judge", url)
    with tempfile.TemporaryDirectory() as staging:
        outputs = Path(staging)
        get_folder(join(url, "out"), outputs)
        judgments = [Judgment.model_validate_json(line) for line in (outputs / JUDGMENTS_FILE).read_text().splitlines()]
    if len(judgments) != len(items):
        raise PlacementError(f"{url}/out/{JUDGMENTS_FILE}: {len(judgments)} judgments for {len(items)} items")
    return judgments


def train_on_pool(config: Config, triples: list[Triple], out_dir: Path, init_adapter: Path | None, url: str) -> TrainResult:
    """Train like `cut.trainer.train` on a worker of the training pool; the adapter lands in `out_dir`."""
    from online_cut.launch import read_training_result, write_training_inputs

    remove_folder(url)
    with tempfile.TemporaryDirectory() as staging:
        inputs = Path(staging)
        write_training_inputs(inputs, config, triples)
        if init_adapter is not None:
            shutil.copytree(init_adapter, inputs / INIT_ADAPTER)
        put_folder(inputs, join(url, "in"))
    _run_on_pool(config.placement.train, "train", url)
    shutil.rmtree(out_dir, ignore_errors=True)
    get_folder(join(url, "out"), out_dir)
    return read_training_result(out_dir)


def run_step(step: str, url: str) -> None:
    """The worker's side: read the step's inputs from `url`/in, run it, write `url`/out."""
    with tempfile.TemporaryDirectory() as staging:
        inputs, outputs = Path(staging) / "in", Path(staging) / "out"
        get_folder(join(url, "in"), inputs)
        config = load_config(inputs / "config.yaml")
        outputs.mkdir()
        if step == "judge":
            _judge(config, inputs, outputs)
        elif step == "train":
            _train(config, inputs, outputs)
        else:
            raise PlacementError(f"unknown step {step!r}: expected judge or train")
        put_folder(outputs, join(url, "out"))


def _judge(config: Config, inputs: Path, outputs: Path) -> None:
    from online_cut.judge_setup import configured_judge

    items = [JudgeItem.model_validate_json(line) for line in (inputs / ITEMS_FILE).read_text().splitlines()]
    judgments = configured_judge(config.judge).judge_many_sync(items)
    (outputs / JUDGMENTS_FILE).write_text("".join(j.model_dump_json() + "\n" for j in judgments))


def _train(config: Config, inputs: Path, outputs: Path) -> None:
    from online_cut.launch import run_training

    init_adapter = inputs / INIT_ADAPTER
    run_training(config, inputs, outputs, init_adapter if init_adapter.is_dir() else None)
