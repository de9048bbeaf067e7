"""The round's steps as Prefect tasks: each a few lines around `online_cut.steps`.

Only the judge step is retried by Prefect: judgments already made are in the store, so a
retry pays for nothing twice. Sampling and training hold the engine and the model; a failure
there ends the round and a rerun of the run continues from it.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from judges.base import Judge
from online_cut import steps
from online_cut.steps import RunContext
from samplers.base import Sampler
from storage import records

# Steps that hold the accelerator carry this tag; `prefect concurrency-limit create gpu 1`
# then keeps two runs from using one card at once (docs/scaling.md).
DEVICE_TAG = "gpu"
# The judging progress artifact moves in steps of this many percent.
PROGRESS_STEP = 5.0


@task(name="sample", cache_policy=NO_CACHE, tags=[DEVICE_TAG])
def sample(ctx: RunContext, sampler: Sampler, round: int) -> int:
    return steps.sample(ctx, sampler, round)


@task(name="judge", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def judge(ctx: RunContext, judge: Judge, round: int) -> int:
    """The round's judging, its share done shown as a progress artifact (a batch's wait can take hours)."""
    artifact_id = create_progress_artifact(0.0, description=f"round {round}: responses judged", _sync=True)
    shown = 0.0

    def judged(done: int, total: int) -> None:
        nonlocal shown
        share = 100.0 * done / max(total, 1)
        if share - shown >= PROGRESS_STEP or done == total:  # one request to the server per step, not per response
            update_progress_artifact(artifact_id, progress=share, _sync=True)
            shown = share

    return steps.judge(ctx, judge, round, judged)


@task(name="refine", cache_policy=NO_CACHE, tags=[DEVICE_TAG])
def refine(ctx: RunContext, sampler: Sampler, judge: Judge, round: int) -> int:
    return steps.refine(ctx, sampler, judge, round)


@task(name="train", cache_policy=NO_CACHE, tags=[DEVICE_TAG])
def train(ctx: RunContext, sampler: Sampler, round: int, judge_id: str) -> records.Adapter | None:
    sampler.pause()  # frees the device for the trainer where the config asks for it
    return steps.train(ctx, round, judge_id)


@task(name="evaluate", cache_policy=NO_CACHE, tags=[DEVICE_TAG])
def evaluate(
    ctx: RunContext, sampler: Sampler, judge: Judge, round: int, candidate: records.Adapter | None
) -> dict[str, dict[str, float]]:
    return steps.evaluate(ctx, sampler, judge, round, candidate)


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def promote(
    ctx: RunContext, round: int, candidate: records.Adapter | None, scores: dict[str, dict[str, float]], wall_s: float
) -> bool:
    return steps.promote(ctx, round, candidate, scores, wall_s)
