"""The `online-cut` flow: one flow run is one alignment run of N rounds (docs/architecture.md, "The online round").

    sample → judge → (refine, objective ilf only) → train → evaluate → promote, round after round

A step the config places on a work pool runs there as the `online-cut-step` flow (flows/step.py).

Each round is a subflow (one row per round in the Prefect UI) with its own artifacts. The
store is the source of truth for what is done, so running a crashed or cancelled run again
under the same `run` name continues from its first unfinished step; that attempt marks the
earlier, killed attempts Crashed on the server (flows/attempts.py).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import artifacts, attempts
from flows.people import judge_with_people, server_has_a_ui
from judges.base import Judge
from judges.cache import StoreJudgmentCache
from judges.human import PEOPLE
from judges.openai_batch import StoreBatchLedger
from online_cut.config import load_config
from online_cut.logs import show_progress
from online_cut.watchdog import guard_store_children
from rounds.context import RunContext
from rounds.resume import open_run
from samplers.base import Sampler
from samplers.factory import open_sampler, started_early
from storage.store import Store
from tasks import steps
from tasks.judge_setup import configured_judge
from tasks.placement import check_pools

log = logging.getLogger(__name__)


# Its parameters are the run's live objects (store context, warm engine, judge), not user
# input: nothing to validate, and their classes cannot be rebuilt from a served entry point.
@flow(name="online-cut-round", flow_run_name="round-{round}", validate_parameters=False)
def alignment_round(ctx: RunContext, sampler: Sampler, judge: Judge | None, round: int) -> bool:
    """One round; returns whether its candidate was promoted. `judge` is the AI judge that judges at once (the
    drafter where people review; None where people alone judge)."""
    started = time.perf_counter()
    state = steps.start_round(ctx, round)
    if state.gate_decision is None:
        earlier_s = sum(s or 0.0 for s in (state.sample_s, state.judge_s, state.refine_s, state.train_s, state.eval_s))
        steps.on_device(steps.sample)(ctx, sampler, round)
        if ctx.config.judge.by_people:
            judge_with_people(ctx, sampler, judge, round)
        else:
            steps.judge(ctx, judge, round)
        if ctx.config.cut.objective == "ilf":
            steps.on_device(steps.refine)(ctx, sampler, judge, round)
        trained_on = PEOPLE if ctx.config.judge.by_people else judge.judge_id
        candidate = steps.on_device(steps.train)(ctx, sampler, round, trained_on)
        scores = steps.on_device(steps.evaluate)(ctx, sampler, judge, round, candidate)
        # Steps finished by an earlier, interrupted attempt count toward the round's wall time.
        promoted = steps.promote(ctx, round, candidate, scores, time.perf_counter() - started + earlier_s)
    else:  # decided by an earlier attempt, which may have stopped before what follows
        promoted = state.gate_decision == "promoted"
    # What `online-cut sql` reads while a later round holds the store's write lock; all idempotent.
    steps.export(ctx, round)
    steps.mirror_round(ctx, round)
    artifacts.publish_round(ctx, round)
    return promoted


@flow(name="online-cut", log_prints=True)
def online_cut(config: str = "configs/quickstart.yaml", rounds: int | None = None, run: str | None = None) -> str:
    """Align the configured model for `rounds` rounds (default: the config's).

    `run` names the alignment run in the store; run it again with the same name to resume.
    Default: this flow run's name.
    """
    show_progress()
    logger = get_run_logger()
    settings = load_config(Path(config), {"rounds": rounds} if rounds is not None else None)
    for leftover in guard_store_children(settings.storage.db):
        logger.warning("a killed run on %s left process %s running; ended it", settings.storage.db, leftover)
    check_pools(settings.placement)
    run = run or flow_run.get_name()
    this_attempt, run_attempts = attempts.begin_attempt(run)
    if len(run_attempts) > 1:
        artifacts.publish_attempts(run, this_attempt, run_attempts)
    ctx = open_run(settings, run, Store.from_config(settings.storage))
    store = ctx.store
    judge = configured_judge(settings.judge, cache=StoreJudgmentCache(store), ledger=StoreBatchLedger(store))
    judged_by = ("people" if judge is None else
                 f"people reviewing the drafts of {judge.judge_id}" if settings.judge.by_people else judge.judge_id)
    logger.info("run %s: %d rounds of %s judged by %s", run, settings.rounds, ctx.base_model, judged_by)
    with open_sampler(settings.sampler, ctx.base_model, dtype=settings.model.dtype,
                      max_model_len=settings.model.max_model_len) as sampler:
        logger.info("sampler %s: %s", sampler.backend, sampler.reason)
        freeze_loaded_objects()
        for round in range(1, settings.rounds + 1):
            alignment_round(ctx, sampler, judge, round)
            artifacts.publish_progress(ctx, round)
    artifacts.publish_run(ctx)
    return run


def freeze_loaded_objects() -> None:
    """Exempt what the run has loaded so far (torch, vLLM, Prefect and the engine: some 900,000 objects
    that live as long as the process) from later garbage collections. Each full collection scanned them
    all again: a third of a second on 2 CPU cores, once or twice a round, one of them inside the train
    step. The vLLM engine's own process does the same once it has started. Not collected first (another
    third of a second before the first sample): what became garbage since the last full collection, a
    few thousand objects, is frozen with them, once."""
    gc.freeze()


def run_here(config: str, rounds: int | None = None, run: str | None = None) -> str:
    """Run `online_cut` in this process (`online-cut run`) with round 1's two waits side by side.

    Without PREFECT_API_URL a flow run first starts Prefect's temporary server, and only then could
    the flow start its engine: here the server starts in its own process while this one starts the
    engine (both were about half of the wait for round 1's first sample, docs/cold-start.md).
    """
    from prefect.server.api.server import SubprocessASGIServer

    show_progress()  # the engine's start is logged before the flow run, which would set this, begins
    settings = load_config(Path(config), {"rounds": rounds} if rounds is not None else None)
    # Before the engine starts: a killed run's engine would share the cores with it.
    for leftover in guard_store_children(settings.storage.db):
        log.warning("a killed run on %s left process %s running; ended it", settings.storage.db, leftover)
    # A failed start is not lost: the flow run starts the server again and raises its error.
    server = None if server_has_a_ui() else threading.Thread(target=SubprocessASGIServer().start, daemon=True)
    if server:
        server.start()
    with started_early(settings.sampler, settings.model.name_or_path(), dtype=settings.model.dtype,
                       max_model_len=settings.model.max_model_len):
        if server:
            server.join()
        return online_cut(config=config, rounds=rounds, run=run)
