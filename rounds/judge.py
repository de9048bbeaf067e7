"""The judge step: the round's responses not judged yet, judged and stored."""

from __future__ import annotations

import logging
import time

from judges.base import Judge
from judges.cache import stored_judgment
from judges.human import PEOPLE
from judges.judgment import JudgeItem
from rounds.context import Progress, RunContext

log = logging.getLogger(__name__)


def unjudged_items(ctx: RunContext, round: int, judge_id: str) -> list[JudgeItem]:
    """The round's responses this judge (`PEOPLE`: any person) has no usable judgment of yet."""
    rows = ctx.store.query(
        "SELECT r.response_id, p.instruction, p.input, p.reference, r.text FROM responses r "
        "JOIN prompts p USING (prompt_id) WHERE r.run = ? AND r.round = ? AND r.response_id NOT IN "
        "(SELECT response_id FROM judgments WHERE verdict <> 'failed' AND (judge = ? OR starts_with(judge, ?))) "
        "ORDER BY r.response_id",
        [ctx.run, round, judge_id, f"{PEOPLE}:" if judge_id == PEOPLE else None],
    )
    return [
        JudgeItem(
            instruction=row["instruction"],
            input=row["input"],
            response=row["text"],
            metadata=row["reference"] if isinstance(row["reference"], dict) else {},
            response_id=row["response_id"],
        )
        for row in rows
    ]


def judge(ctx: RunContext, judge: Judge, round: int, progress: Progress | None = None) -> int:
    """Judge the round's responses not judged yet (a batch-mode judge: in one batch); returns the judgments stored.

    `progress` is told how many responses are judged so far, and of how many.
    """
    state = ctx.state(round)
    if state.judge_s is not None:
        return 0
    started = time.perf_counter()
    added = judge_unjudged(ctx, judge, round, progress)
    ctx.store.record_round_step(ctx.run, round, "judge", time.perf_counter() - started)
    return added


def judge_unjudged(ctx: RunContext, judge: Judge, round: int, progress: Progress | None = None) -> int:
    """The judging of `judge`, leaving the round's judge step open (review mode: people judge next)."""
    items = unjudged_items(ctx, round, judge.judge_id)
    log.info("round %d: judging %d responses with %s", round, len(items), judge.judge_id)
    done = 0

    def judged(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, len(items))

    # A model judge's cache has stored each judgment as it was made (judges/base.py); a rule
    # critic has no cache and answers at once. Writes are idempotent.
    verdicts = judge.judge_many_sync(items, judged)
    log.info("round %d: judged %d (%d positive, %d failed)", round, len(verdicts),
             sum(v.verdict == "positive" for v in verdicts), sum(v.status == "failed" for v in verdicts))
    return ctx.store.add_judgments(stored_judgment(i.response_id, judge.judge_id, v) for i, v in zip(items, verdicts))
