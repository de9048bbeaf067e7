"""The judge step when people judge (`judge.kind: human | review`): a form in the Prefect UI per page of
the round's responses (judges/human.py makes the form and checks the answers).

How the round waits (docs/people.md): the round's flow run pauses (`pause_flow_run`, waiting for the
page's input) after the sampler has released its engine, so no vLLM engine or GPU is held while
people work; the engine starts again at the next step that needs it. Pausing keeps the flow's
process, which costs nothing but memory; suspending would end it, but Prefect refuses to suspend a
subflow (the round) or a run without a deployment (`online-cut run`). Each page is stored as soon as
it is answered, so a killed run loses nothing typed: its rerun asks only for the pages still unjudged.
A page nobody answers within `judge.people.timeout_s` stops the run with that message; a rerun asks
again.
"""

from __future__ import annotations

import itertools
import logging
import math
import time

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.settings import get_current_settings
from pydantic import ValidationError, create_model

from flows.artifacts import artifact_key
from formats.spans import Span
from judges.agreement import agreement
from judges.base import Judge
from judges.cache import stored_judgment
from judges.human import PEOPLE, PageRefused, answers_of, changed, form_fields, page_description, page_judgments
from judges.judgment import JudgeItem, Judgment
from rounds import judge as judging
from rounds.context import RunContext
from samplers.base import Sampler

log = logging.getLogger(__name__)


def server_has_a_ui() -> bool:
    """Whether Prefect clients reach a server of their own (PREFECT_API_URL), with its UI: the temporary
    server a flow run starts without one has none."""
    return bool(get_current_settings().api.url)


class NobodyAnswered(RuntimeError):
    """A page waited `judge.people.timeout_s` for an answer; what was answered before it is stored."""


def judge_with_people(ctx: RunContext, sampler: Sampler, drafter: Judge | None, round: int) -> int:
    """The round's judge step with people: the drafter's drafts first (review), then a form per page of the
    responses no person has judged yet; returns the judgments people gave in this call."""
    state = ctx.state(round)
    if state.judge_s is not None:
        return 0
    started = time.perf_counter()
    if drafter is not None:
        judging.judge_unjudged(ctx, drafter, round)
    drafts = {} if drafter is None else _drafts(ctx, round, drafter.judge_id)
    people = ctx.config.judge.people
    judged_before = _judged_by_people(ctx, round)
    items = judging.unjudged_items(ctx, round, PEOPLE)
    total = judged_before + len(items)
    progress = create_progress_artifact(100.0 * judged_before / max(total, 1), _sync=True,
                                        description=f"round {round}: responses judged by people, of {total}")
    if items:
        sampler.release()  # no engine waits beside people: neither the sampler's
        if drafter is not None:
            drafter.close()  # nor a local critic's
        log.info("round %d: %d responses for people to judge, in pages of at most %d, in the Prefect UI",
                 round, len(items), people.page_size)
    annotator, number = None, 0
    while items:  # asked again before each page: an `annotate import` meanwhile may have judged some
        number += 1
        pages = number - 1 + math.ceil(len(items) / people.page_size)
        judgments, annotator = _ask(ctx, round, items[: people.page_size], drafts, number, pages, annotator)
        ctx.store.add_judgments(judgments)
        update_progress_artifact(progress, 100.0 * _judged_by_people(ctx, round) / total, _sync=True)
        log.info("round %d: page %d of %d judged by %s", round, number, pages, annotator)
        items = judging.unjudged_items(ctx, round, PEOPLE)
    if drafter is not None:
        publish_review_agreement(ctx, round, drafter.judge_id)
    ctx.store.record_round_step(ctx.run, round, "judge", time.perf_counter() - started)
    return _judged_by_people(ctx, round) - judged_before


def publish_review_agreement(ctx: RunContext, round: int, drafter: str) -> None:
    """How far people's reviews moved the AI judge's drafts this round: a table artifact (`online-cut judges
    agree` gives the same figures for any two judges)."""
    rows = ctx.store.query(
        "SELECT d.verdict AS draft, p.verdict AS final, p.changed FROM judgments p "
        "JOIN judgments d ON d.response_id = p.response_id AND d.judge = p.draft_judge "
        "JOIN responses r ON r.response_id = p.response_id WHERE r.run = ? AND r.round = ? AND p.draft_judge = ? "
        "AND d.verdict <> 'failed'", [ctx.run, round, drafter])
    found = agreement([(row["draft"], row["final"]) for row in rows])
    create_table_artifact(
        key=artifact_key(ctx.run, "review", round),
        table=[{"drafter": drafter, "reviewed": found.n, "drafts_changed": sum(bool(row["changed"]) for row in rows),
                "same_verdict": found.agreed, "kappa": found.kappa, "kappa_low": found.kappa_low,
                "kappa_high": found.kappa_high}],
        description=f"Run {ctx.run}, round {round}: the drafts of {drafter} against what people made of them",
    )


def _ask(ctx: RunContext, round: int, page: list[JudgeItem], drafts: dict[str, Judgment], number: int, pages: int,
         annotator: str | None) -> tuple[list, str]:
    """One page's stored judgments and who gave them, asked again until the answers can be stored."""
    people = ctx.config.judge.people
    refused: list[str] = []
    filled = None
    for attempt in itertools.count(1):
        form = create_model(f"Round{round}Page{number}", __base__=RunInput,
                            **form_fields(page, drafts, filled, annotator))
        form._description = page_description(people.guidelines, f"Run {ctx.run}, round {round}: page {number} of {pages}",
                                             refused)
        try:
            submitted = pause_flow_run(wait_for_input=form, timeout=math.ceil(people.timeout_s),
                                       poll_interval=people.poll_s, key=f"round-{round}-page-{number}-{attempt}")
        except FlowPauseTimeout:
            raise NobodyAnswered(
                f"round {round}: page {number} of {pages} had no answer within {people.timeout_s:g} s "
                "(judge.people.timeout_s); the pages answered before it are stored: run again to continue"
            ) from None
        except ValidationError as exc:  # the server checked the schema; loading it checks the types again
            refused = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            log.warning("round %d: page %d refused: %s", round, number, "; ".join(refused))
            continue
        filled = submitted.model_dump()
        annotator, answers = answers_of(page, filled)
        try:
            judgments = page_judgments(page, annotator, answers, drafts)
        except PageRefused as exc:
            refused = exc.reasons
            log.warning("round %d: page %d refused: %s", round, number, exc)
            continue
        return [_stored(item, judgment, drafts) for item, judgment in zip(page, judgments)], annotator


def _stored(item: JudgeItem, judgment: Judgment, drafts: dict[str, Judgment]):
    row = stored_judgment(item.response_id, judgment.judge_id, judgment)
    draft = drafts.get(item.response_id)
    if draft is None:
        return row
    return row.model_copy(update={"draft_judge": draft.judge_id, "changed": changed(draft, judgment)})


def _drafts(ctx: RunContext, round: int, drafter: str) -> dict[str, Judgment]:
    """The drafter's judgments of the round's responses, as the form shows them."""
    rows = ctx.store.query("SELECT response_id, verdict, judgment, score, spans FROM triples "
                           "WHERE run = ? AND round = ? AND judge = ?", [ctx.run, round, drafter])
    return {row["response_id"]: Judgment(status="ok", verdict=row["verdict"], judgment=row["judgment"],
                                         score=row["score"], spans=tuple(Span.model_validate(s) for s in row["spans"] or ()),
                                         judge_id=drafter)
            for row in rows}


def _judged_by_people(ctx: RunContext, round: int) -> int:
    (row,) = ctx.store.query(
        "SELECT count(DISTINCT j.response_id) AS n FROM judgments j JOIN responses r USING (response_id) "
        "WHERE r.run = ? AND r.round = ? "
        "AND starts_with(j.judge, ?) AND j.verdict <> 'failed'", [ctx.run, round, f"{PEOPLE}:"])
    return row["n"]
