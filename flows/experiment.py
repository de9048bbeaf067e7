"""The `online-cut-experiment` flow: objectives (or arms: named `cut` settings) compared from the
same round-1 samples.

One warm sampler serves every run; each objective's rounds are the ordinary `round-N`
subflows, so the experiment is watched in the Prefect UI like any run, and a rerun with the
same name continues where it stopped (see rounds/experiment.py; rounds/results.py writes the table).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from cut.config import OBJECTIVES
from flows.alignment import alignment_round
from judges.cache import StoreJudgmentCache
from judges.openai_batch import StoreBatchLedger
from online_cut.config import dump_config, load_config
from online_cut.logs import show_progress
from online_cut.watchdog import guard_store_children
from rounds import experiment as exp
from rounds.results import arm_result, write_results
from rounds.context import RunContext
from rounds.resume import open_run
from samplers.factory import open_sampler
from storage.store import Store
from tasks import steps
from tasks.judge_setup import configured_judge
from tasks.placement import check_pools


@flow(name="online-cut-experiment", log_prints=True)
def experiment(
    config: str = "configs/experiment-arith.yaml",
    name: str = "arith",
    objectives: list[str] | None = None,
    results: str = "docs/results.md",
    repeats: int = 1,
    arms: dict[str, dict[str, Any]] | None = None,
    dev: bool = False,
) -> str:
    """Run `rounds` online rounds of each arm from shared round-1 samples, `repeats` times over, each
    from its own samples; write `results`. The arms are `arms` (name: `cut` settings) if given, else
    one per objective of `objectives` (default: every one in `cut.config.OBJECTIVES`). `dev` scores
    them on the suites' dev prompts (`evaluation.split: dev`), to choose settings on."""
    arms = arms or {objective: {"objective": objective} for objective in objectives or OBJECTIVES}
    show_progress()
    logger = get_run_logger()
    started = time.perf_counter()
    settings = load_config(Path(config))
    for leftover in guard_store_children(settings.storage.db):
        logger.warning("a killed run on %s left process %s running; ended it", settings.storage.db, leftover)
    if dev:
        settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update={"split": "dev"})})
    arm_configs = {arm: exp.arm_config(settings, arm, arm_settings) for arm, arm_settings in arms.items()}
    check_pools(settings.placement)
    store = Store.from_config(settings.storage)
    judge = configured_judge(settings.judge, cache=StoreJudgmentCache(store), ledger=StoreBatchLedger(store))
    with open_sampler(settings.sampler, RunContext(settings, exp.shared_run(name), store).base_model,
                      dtype=settings.model.dtype, max_model_len=settings.model.max_model_len) as sampler:
        for repeat in range(1, repeats + 1):
            repeated = exp.repeat_config(settings, repeat)
            shared = open_run(repeated, exp.shared_run(name, repeat), store)
            steps.start_round(shared, 1)
            steps.on_device(steps.sample)(shared, sampler, 1)
            steps.judge(shared, judge, 1)
            exp.evaluate_base(shared, sampler, judge)
            for arm, arm_config in arm_configs.items():
                ctx = open_run(exp.repeat_config(arm_config, repeat), exp.run_name(name, arm, repeat), store)
                exp.share_first_round(store, shared.run, ctx.run)
                for round in range(1, settings.rounds + 1):
                    alignment_round.with_options(flow_run_name=f"{ctx.run}-round-{round}")(ctx, sampler, judge, round)
                logger.info("repeat %d, %s: rounds done", repeat, arm)
    held_out = exp.held_out_names(RunContext(settings, exp.shared_run(name), store), judge)
    outcomes = {
        held_out_set: [arm_result(store, name, arm, arm_configs[arm].cut.objective, settings.rounds, repeats, held_out_set)
                       for arm in arms]
        for held_out_set in held_out
    }
    for held_out_set, results_on_set in outcomes.items():
        for outcome in results_on_set:
            logger.info("%s on %s: score per repeat and round %s", outcome.arm, held_out_set, outcome.accuracy)
    command = shlex.join(["online-cut", "experiment", "--config", config, "--name", name,
                          *exp.arm_options(arms), *(["--dev"] if dev else []), "--repeats", str(repeats),
                          "--results", results])
    write_results(
        Path(results), outcomes, command=command, config_text=dump_config(settings),
        wall_s=time.perf_counter() - started, seed=settings.cut.seed, n=settings.evaluation.n, arms=arms,
    )
    logger.info("wrote %s", results)
    return results
