"""ilf's refinements: the model rewrites a negative's response given its judgment, the judge says
whether the rewrite is fine. The round's refine step (`refine`) stores them chunk by chunk;
`online-cut train --objective ilf` refines a file's negatives with the configured sampler.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from cut.config import TemplatesConfig
from cut.data import Triple
from cut.rows import refine_request
from judges.base import Judge
from judges.judgment import JudgeItem, Judgment
from online_cut.config import Config
from rounds.context import RunContext, attach
from samplers.base import Sampler
from samplers.config import SamplerConfig
from samplers.records import Prompt, Sample, SamplingSettings
from storage import records

log = logging.getLogger(__name__)

# Refinements are sampled, judged and stored this many negatives at a time: a killed refine
# step samples again at most one chunk, never a stored refinement.
REFINE_CHUNK = 16


def refinement_settings(config: SamplerConfig) -> SamplingSettings:
    """The round's sampling settings, one refinement per negative."""
    return replace(SamplingSettings.from_config(config), n=1)


def refine_responses(
    sampler: Sampler, judge: Judge, items: list[JudgeItem], judgments: list[str], templates: TemplatesConfig,
    settings: SamplingSettings,
) -> list[tuple[Sample, Judgment]]:
    """Per negative (its item and judgment j−), the attached adapter's answer to [x, y, j−] → y* and
    the judge's verdict on y* as a response to x (with the item's metadata, for a rule critic)."""
    requests = [
        Prompt(refine_request(Triple(item.instruction, item.input, item.response, judgment), templates))
        for item, judgment in zip(items, judgments, strict=True)
    ]
    samples = sampler.sample(requests, settings)
    rewritten = [item.model_copy(update={"response": s.text, "response_id": None}) for item, s in zip(items, samples)]
    return list(zip(samples, judge.judge_many_sync(rewritten), strict=True))


def ilf_triples(triples: list[Triple], accepted: dict[int, str]) -> list[Triple]:
    """What ilf trains on: the positives, and (x, y*) for each negative (by index) with an accepted refinement."""
    kept = [t for t in triples if not t.negative]
    kept += [Triple(t.instruction, t.input, accepted[i], None) for i, t in enumerate(triples) if i in accepted]
    return kept


def refine_offline(config: Config, judge: Judge, triples: list[Triple],
                   init_adapter: Path | None) -> tuple[list[Triple], list[dict]]:
    """`online-cut train --objective ilf`: refine the negatives of `triples` with the configured sampler (from
    `init_adapter`, else the base model), judged by `judge`; returns the triples to train on and one record per
    refinement."""
    from samplers.factory import open_sampler

    negatives = [i for i, t in enumerate(triples) if t.negative]
    items = [JudgeItem(instruction=triples[i].instruction, input=triples[i].input, response=triples[i].response)
             for i in negatives]
    base_model = config.model.name_or_path()
    with open_sampler(config.sampler, base_model, dtype=config.model.dtype,
                      max_model_len=config.model.max_model_len) as sampler:
        sampler.attach(init_adapter, expect_change=init_adapter is not None)
        refined = refine_responses(sampler, judge, items, [triples[i].judgment for i in negatives],
                                   config.cut.templates, refinement_settings(config.sampler)) if negatives else []
    accepted = {i: sample.text for i, (sample, verdict) in zip(negatives, refined) if verdict.verdict == "positive"}
    if not accepted:
        log.warning("ilf: none of %d refinements judged positive; training on the %d positives only",
                    len(negatives), len(triples) - len(negatives))
    records = [
        {"triple": i, "refinement": sample.text, "verdict": verdict.verdict if verdict.status == "ok" else "failed",
         "judgment": verdict.judgment, "error": verdict.error, "accepted": i in accepted}
        for i, (sample, verdict) in zip(negatives, refined)
    ]
    return ilf_triples(triples, accepted), records


def unrefined_negatives(ctx: RunContext, round: int, judge_id: str) -> list[tuple[JudgeItem, str]]:
    """The round's negatives by this judge (item and judgment) with no stored refinement, or with one whose
    judging failed."""
    rows = ctx.store.query(
        "SELECT r.response_id, p.instruction, p.input, p.reference, r.text, j.judgment FROM responses r "
        "JOIN prompts p USING (prompt_id) JOIN judgments j ON j.response_id = r.response_id AND j.judge = ? "
        "WHERE r.run = ? AND r.round = ? AND j.verdict = 'negative' AND r.response_id NOT IN "
        "(SELECT response_id FROM refinements WHERE run = ? AND round = ? AND judge = ? AND verdict <> 'failed') "
        "ORDER BY r.response_id",
        [judge_id, ctx.run, round, ctx.run, round, judge_id],
    )
    return [
        (
            JudgeItem(instruction=row["instruction"], input=row["input"], response=row["text"],
                      metadata=row["reference"] if isinstance(row["reference"], dict) else {},
                      response_id=row["response_id"]),
            row["judgment"],
        )
        for row in rows
    ]


def refine(ctx: RunContext, sampler: Sampler, judge: Judge, round: int) -> int:
    """ilf: each negative's response rewritten by the round's input adapter given its judgment, and the
    rewrite judged by the same judge, stored chunk by chunk; returns the refinements stored."""
    state = ctx.state(round)
    if state.refine_s is not None:
        return 0
    started = time.perf_counter()
    pending = unrefined_negatives(ctx, round, judge.judge_id)
    log.info("round %d: refining %d negatives with %s, judged by %s", round, len(pending),
             state.adapter_in or "the base model", judge.judge_id)
    settings = refinement_settings(ctx.config.sampler)
    if pending:
        attach(sampler, ctx.adapter(state.adapter_in))
    added = 0
    for first in range(0, len(pending), REFINE_CHUNK):
        chunk = pending[first : first + REFINE_CHUNK]
        refined = refine_responses(sampler, judge, [item for item, _ in chunk], [j for _, j in chunk],
                                   ctx.config.cut.templates, settings)
        added += ctx.store.add_refinements(
            records.Refinement(
                run=ctx.run, round=round, response_id=item.response_id, judge=judge.judge_id,
                adapter_id=state.adapter_in, text=sample.text, finish_reason=sample.finish_reason,
                sampling=sample.params, verdict=verdict.verdict if verdict.status == "ok" else "failed",
                judgment=verdict.judgment, score=verdict.score, error=verdict.error,
            )
            for (item, _), (sample, verdict) in zip(chunk, refined)
        )
    ctx.store.record_round_step(ctx.run, round, "refine", time.perf_counter() - started)
    return added
