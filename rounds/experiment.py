"""Objectives compared on equal footing: the same round-1 samples, then online rounds each.

An experiment named E compares arms: by default one per objective, or named sets of `cut`
settings (`--arm`, e.g. a sweep of λ on a dev split). It samples and judges round 1 once,
from the base model, under run `E-shared`; each arm's run `E-<arm>` starts with a copy of those responses and
judgments (round 1's sample and judge steps marked done) and then runs the ordinary rounds.
Each further repeat k does the same under `E-shared-rk` and `E-<arm>-rk`, from its own
round-1 samples (the CPU engine cannot be seeded), so arms are compared paired by repeat.
The table reads the evaluations the rounds stored: round 0 is the base model (the first
round's incumbent), round r the candidate trained in round r.
"""

from __future__ import annotations

import json
from typing import Any

from judges.base import Judge
from online_cut.config import Config, parse_config
from rounds.context import RunContext
from rounds.evaluate import held_out_sets, measure
from samplers.base import Sampler
from storage import records
from storage.store import Store


def _repeat_suffix(repeat: int) -> str:
    # The first repeat keeps the names experiments had before repeats existed, so they resume as they were.
    return "" if repeat == 1 else f"-r{repeat}"


def run_name(experiment: str, arm: str, repeat: int = 1) -> str:
    return f"{experiment}-{arm}{_repeat_suffix(repeat)}"


def plain_objectives(arms: dict[str, dict[str, Any]]) -> bool:
    """Whether every arm is just an objective under its own name (the default comparison)."""
    return all(settings == {"objective": arm} for arm, settings in arms.items())


def arm_options(arms: dict[str, dict[str, Any]]) -> list[str]:
    """The command-line options that give these arms again."""
    if plain_objectives(arms):
        return [f"--objective={arm}" for arm in arms]
    return [f"--arm={arm}={json.dumps(settings, separators=(', ', ': '))}" for arm, settings in arms.items()]


def shared_run(experiment: str, repeat: int = 1) -> str:
    return f"{experiment}-shared{_repeat_suffix(repeat)}"


def arm_config(config: Config, arm: str, settings: dict[str, Any]) -> Config:
    """`config` with the arm's `cut` settings (`{"objective": "cut", "lam": 1.1}`), validated as a config file's
    are (a bad one raises `ConfigError` naming the arm and the key)."""
    data = config.model_dump(mode="json")
    return parse_config({**data, "cut": {**data["cut"], **settings}}, f"arm {arm!r}")


def repeat_config(config: Config, repeat: int) -> Config:
    """Repeat k draws its rounds' training prompts from `prompts.seed + k - 1`: its own samples even
    where the sampler is seeded (the held-out sets stay the same, so scores compare)."""
    return config.model_copy(update={"prompts": config.prompts.model_copy(update={"seed": config.prompts.seed + repeat - 1})})


def evaluate_base(ctx: RunContext, sampler: Sampler, judge: Judge) -> None:
    """Score the base model on the held-out sets once, as round 1's incumbent of the shared run."""
    if ctx.store.query("SELECT 1 FROM evaluations WHERE run = ? AND round = 1", [ctx.run]):
        return
    ctx.store.add_evaluations(
        measure(ctx, sampler, 1, "incumbent", None, held_out)[0] for held_out in held_out_sets(ctx, judge)
    )


def held_out_names(ctx: RunContext, judge: Judge) -> list[str]:
    """The held-out sets the rounds score, as the evaluations name them (`addition`, `file:dev.jsonl`)."""
    return [held_out.name for held_out in held_out_sets(ctx, judge)]


def share_first_round(store: Store, source_run: str, target_run: str) -> None:
    """Give `target_run` round 1 of `source_run`: its responses and judgments with their spans, sampled and judged, and
    the base model's held-out scores (so each objective's first round does not score it again)."""
    source = store.round_state(source_run, 1)
    if source is None or source.judge_s is None:
        raise RuntimeError(f"run {source_run!r} has not finished judging round 1; nothing to share")
    target = store.round_state(target_run, 1)
    if target is not None and target.judge_s is not None:
        return
    responses = store.responses(source_run, 1)
    copies = {r.response_id: r.model_copy(update={"run": target_run}) for r in responses}
    # Spans live in their own table; the triples view gathers a judgment's (a failed one has none).
    judgments = store.query(
        "SELECT j.* EXCLUDE (created_at), coalesce(t.spans, []) AS spans FROM judgments j "
        "JOIN responses r USING (response_id) LEFT JOIN triples t ON t.response_id = j.response_id AND t.judge = j.judge "
        "WHERE r.run = ? AND r.round = 1",
        [source_run],
    )
    base_scores = store.query("SELECT * EXCLUDE (created_at) FROM evaluations WHERE run = ? AND round = 1", [source_run])
    with store.transaction() as tx:
        tx.start_round(target_run, 1)
        tx.add_responses(copies.values())
        tx.add_judgments(
            records.Judgment.model_validate({**row, "response_id": copies[row["response_id"]].response_id})
            for row in judgments
        )
        tx.add_evaluations(records.Evaluation.model_validate({**row, "run": target_run}) for row in base_scores)
        tx.record_round_step(target_run, 1, "sample", source.sample_s)
        tx.record_round_step(target_run, 1, "judge", source.judge_s)
