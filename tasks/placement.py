"""Steps placed on Prefect work pools: judging on a CPU pool, training on a GPU pool.

A placed step is a flow run of the deployment `online-cut-step/<pool>` (prefect.yaml),
started by the round with `run_deployment` and waited for (the worker's side: flows/step.py). Its inputs and outputs pass
through `placement.exchange`, a folder or fsspec URL the flow and the pool's workers reach,
in a folder of its own per attempt (a late run of an abandoned attempt cannot mix in):

    <exchange>/<run>/round-<r>/<step>/<attempt>/in/   config.yaml, and items.jsonl (judge)
                                                      or triples.jsonl [+ init-adapter/] (train)
    <exchange>/<run>/round-<r>/<step>/<attempt>/out/  judgments.jsonl (judge), or the adapter
                                                      with metrics.jsonl, flagged.json, summary.json

The attempt's folder is removed once its outputs are read. The store stays with the flow —
DuckDB has one writer — and the worker never opens it: the flow writes what the step sent
back. The worker gets only the config sections its step needs; only the step's name and its
exchange URL travel as flow-run parameters, and a judge's API key is read on the worker (its
environment or Secret block).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cut import training_folder
from judges.base import Judge, Progress
from judges.judgment import JudgeItem, Judgment
from online_cut.config import Config, PlacementConfig, dump_config
from storage.remote_folders import get_folder, join, put_folder, remove_folder

if TYPE_CHECKING:  # torch comes with these; the judging worker never needs it
    from cut.data import Triple
    from cut.trainer import TrainResult

log = logging.getLogger(__name__)

STEP_FLOW = "online-cut-step"
CONFIG_FILE = training_folder.CONFIG_FILE  # a train step's inputs are a training folder
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
    is missing on the Prefect server; warn when no worker polls the pool (the step would wait)."""
    pools = placement.pools()
    if not pools:
        return
    import httpx
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    placed = ", ".join(f"placement.{step}" for step in pools)
    if not api_url:
        raise PlacementError(f"{placed}: placed steps need the Prefect server the pools' workers poll; set PREFECT_API_URL")
    try:
        with get_client(sync_client=True) as client:
            for step, pool in pools.items():
                _check_pool(client, step, pool, ObjectNotFound)
    except httpx.HTTPError as exc:
        raise PlacementError(f"{placed}: cannot reach the Prefect server at {api_url}: {exc}") from None


def _check_pool(client, step: str, pool: str, not_found: type[Exception]) -> None:
    try:
        work_pool = client.read_work_pool(pool)
    except not_found:
        known = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
        raise PlacementError(
            f"placement.{step}: work pool {pool!r} does not exist on the Prefect server "
            f"(pools there: {known}); create it with `prefect work-pool create {pool} --type process`"
        ) from None
    try:
        deployment = client.read_deployment_by_name(deployment_name(pool))
    except not_found:
        raise PlacementError(
            f"placement.{step}: no deployment {deployment_name(pool)!r} for pool {pool!r}; "
            f"register it with `prefect --no-prompt deploy --name {pool}` (prefect.yaml)"
        ) from None
    if deployment.work_pool_name != pool:
        raise PlacementError(
            f"placement.{step}: deployment {deployment_name(pool)!r} runs on pool {deployment.work_pool_name!r}, not {pool!r}"
        )
    status = work_pool.status.value if work_pool.status else "unknown"
    if work_pool.is_paused or status != "READY":
        log.warning("placement.%s: work pool %r is %s; the step waits until a worker polls it (`prefect worker "
                    "start --pool %s`)", step, pool, "paused" if work_pool.is_paused else f"not ready ({status})", pool)


def _run_on_pool(pool: str, step: str, url: str, write_inputs: Callable[[Path], None], read_outputs: Callable[[Path], object]):
    """Stage the inputs in a fresh attempt folder under `url`, run the step on `pool`, return what `read_outputs` makes of its outputs."""
    from prefect.deployments import run_deployment

    attempt = join(url, uuid.uuid4().hex)
    with tempfile.TemporaryDirectory() as staging:
        write_inputs(Path(staging))
        put_folder(Path(staging), join(attempt, "in"))
    flow_run = run_deployment(deployment_name(pool), parameters={"step": step, "exchange": attempt})
    if not flow_run.state.is_completed():
        raise PlacementError(
            f"{step} on pool {pool!r}: flow run {flow_run.name!r} ended {flow_run.state.name}: {flow_run.state.message}"
        )
    with tempfile.TemporaryDirectory() as staging:
        get_folder(join(attempt, "out"), Path(staging))
        outputs = read_outputs(Path(staging))
    remove_folder(attempt)
    return outputs


# A flow run on the judging pool takes this many responses per request slot; its answers are
# stored when it ends, so a killed run pays again for at most one chunk, never a stored judgment.
PLACED_JUDGE_CHUNK_PER_SLOT = 4


class PlacedJudge(Judge):
    """The run's judge asked through flow runs on its work pool. The cache and the merging of
    equal items stay on the flow's side (`Judge.judge_many`), so only unknown items travel."""

    def __init__(self, judge: Judge, config: Config, url: str) -> None:
        super().__init__(judge.judge_id, judge.cache)
        self._config, self._url = config, url

    async def _judge_fresh(self, items: list[JudgeItem], progress: Progress) -> list[Judgment]:
        chunk_size = PLACED_JUDGE_CHUNK_PER_SLOT * self._config.judge.concurrency
        judgments: list[Judgment] = []
        for first in range(0, len(items), chunk_size):
            chunk = items[first : first + chunk_size]
            # In a thread: Prefect's run_deployment turns into a coroutine under a running event loop.
            answered = await asyncio.to_thread(self._judge_on_pool, chunk)
            await self.keep(list(zip(chunk, answered)))
            progress(len(answered))
            judgments.extend(answered)
        return judgments

    def _judge_on_pool(self, items: list[JudgeItem]) -> list[Judgment]:
        def write_inputs(folder: Path) -> None:
            (folder / CONFIG_FILE).write_text(dump_config(Config(judge=self._config.judge)))
            (folder / ITEMS_FILE).write_text("".join(item.model_dump_json() + "\n" for item in items))

        def read_outputs(folder: Path) -> list[Judgment]:
            lines = (folder / JUDGMENTS_FILE).read_text().splitlines()
            if len(lines) != len(items):
                raise PlacementError(f"{self._url}: {len(lines)} judgments for {len(items)} items")
            return [Judgment.model_validate_json(line) for line in lines]

        return _run_on_pool(self._config.placement.judge, "judge", self._url, write_inputs, read_outputs)


def train_on_pool(config: Config, triples: list[Triple], out_dir: Path, init_adapter: Path | None, url: str) -> TrainResult:
    """Train like `cut.trainer.train` on a worker of the training pool; the adapter lands in `out_dir`
    whole (it is moved into place only once every file is here)."""

    def write_inputs(folder: Path) -> None:
        training_folder.write_inputs(folder, dump_config(Config(model=config.model, cut=config.cut)), triples)
        if init_adapter is not None:
            shutil.copytree(init_adapter, folder / INIT_ADAPTER)

    def read_outputs(folder: Path) -> None:
        partial = out_dir.with_name(out_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial)
        shutil.rmtree(out_dir, ignore_errors=True)
        partial.rename(out_dir)

    _run_on_pool(config.placement.train, "train", url, write_inputs, read_outputs)
    return training_folder.read_result(out_dir)
