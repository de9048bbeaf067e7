"""The round's steps as Prefect tasks: each a few lines around its module in `rounds/`, choosing
where it runs (a work pool, `accelerate launch`, this process) from the config.

Only the judge step (and the store writes after it) is retried by Prefect: judgments already
made are in the store, so a retry pays for nothing twice. Sampling and training hold the engine
and the model; a failure there ends the round and a rerun of the run continues from it.
"""

from __future__ import annotations

import logging

from prefect import Task, get_client, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import ObjectNotFound

from judges.base import Judge
from rounds import context, evaluate as evaluating, gate, judge as judging, mirror, refine as refining
from rounds import sample as sampling, train as training
from rounds.context import RunContext
from samplers.base import Sampler
from storage import records
from storage.exporter import export_parquet
from tasks.placement import PlacedJudge, step_url
from tasks.training import trainer_for

log = logging.getLogger(__name__)

# The steps that hold the accelerator (sample, refine, train, evaluate) carry this tag where
# `prefect concurrency-limit create gpu 1` keeps two runs from using one card at once (docs/scaling.md).
DEVICE_TAG = "gpu"
# The judging progress artifact moves in steps of this many percent.
PROGRESS_STEP = 5.0


def on_device(step: Task) -> Task:
    """`step` tagged DEVICE_TAG when the Prefect server has a concurrency limit on that tag, else as
    it is. Prefect asks the server for a slot for every tagged task run, limit or not; on a SQLite
    server that request now and then fails as "database is locked" and is retried 2 s later, which
    cost a quickstart round (bench/round.py) 4 s of its 70."""
    with get_client(sync_client=True) as client:
        try:
            client.read_concurrency_limit_by_tag(DEVICE_TAG)
        except ObjectNotFound:
            return step
    return step.with_options(tags=[DEVICE_TAG])


@task(name="start-round", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def start_round(ctx: RunContext, round: int) -> records.RoundState:
    return context.start_round(ctx, round)


@task(name="sample", cache_policy=NO_CACHE)
def sample(ctx: RunContext, sampler: Sampler, round: int) -> int:
    return sampling.sample(ctx, sampler, round)


@task(name="judge", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def judge(ctx: RunContext, judge: Judge, round: int) -> int:
    """The round's judging (on `placement.judge`'s pool if set), its share done shown as a progress
    artifact (a batch's wait can take hours)."""
    pool = ctx.config.placement.judge
    if pool is not None:
        log.info("round %d: judging on work pool %s", round, pool)
        judge = PlacedJudge(judge, ctx.config, step_url(ctx.config.placement, ctx.run, round, "judge"))
    artifact_id = create_progress_artifact(0.0, description=f"round {round}: responses judged", _sync=True)
    shown = 0.0

    def judged(done: int, total: int) -> None:
        nonlocal shown
        share = 100.0 * done / max(total, 1)
        if share - shown >= PROGRESS_STEP or done == total:  # one request to the server per step, not per response
            update_progress_artifact(artifact_id, progress=share, _sync=True)
            shown = share

    return judging.judge(ctx, judge, round, judged)


@task(name="refine", cache_policy=NO_CACHE)
def refine(ctx: RunContext, sampler: Sampler, judge: Judge, round: int) -> int:
    return refining.refine(ctx, sampler, judge, round)


@task(name="train", cache_policy=NO_CACHE)
def train(ctx: RunContext, sampler: Sampler, round: int, judge_id: str) -> records.Adapter | None:
    """The round's training, on `placement.train`'s pool, under `accelerate launch`, or here."""
    if ctx.config.placement.train is not None:
        log.info("round %d: training on work pool %s", round, ctx.config.placement.train)
    else:
        sampler.pause()  # frees this machine's device for the trainer where the config asks for it
    return training.train(ctx, round, judge_id, trainer_for(ctx.config, ctx.run, round))


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(
    ctx: RunContext, sampler: Sampler, judge: Judge, round: int, candidate: records.Adapter | None
) -> dict[str, dict[str, float]]:
    return evaluating.evaluate(ctx, sampler, judge, round, candidate)


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def promote(
    ctx: RunContext, round: int, candidate: records.Adapter | None, scores: dict[str, dict[str, float]], wall_s: float
) -> bool:
    return gate.promote(ctx, round, candidate, scores, wall_s)


@task(name="export", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def export(ctx: RunContext, round: int) -> None:
    """The round's triples as Parquet, what `online-cut sql` reads while a later round holds the store's write lock."""
    export_parquet(ctx.store, ctx.config.storage.exports_dir, run=ctx.run, round=round)


@task(name="mirror", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def mirror_round(ctx: RunContext, round: int) -> None:
    mirror.mirror_round(ctx, round)
