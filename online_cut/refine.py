"""ilf's refinements: the model rewrites a negative's response given its judgment, the judge says
whether the rewrite is fine. The round's refine step (`online_cut.steps.refine`) stores them;
`online-cut train --objective ilf` refines a file's negatives with the configured sampler.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from cut.config import TemplatesConfig
from cut.data import Triple
from cut.rows import refine_request
from judges.base import Judge
from judges.judgment import JudgeItem, Judgment
from online_cut.config import Config
from samplers.base import Sampler
from samplers.config import SamplerConfig
from samplers.records import Prompt, Sample, SamplingSettings

log = logging.getLogger(__name__)


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


def refine_offline(config: Config, triples: list[Triple], init_adapter: Path | None) -> tuple[list[Triple], list[dict]]:
    """`online-cut train --objective ilf`: refine the negatives of `triples` with the configured sampler (from
    `init_adapter`, else the base model) and judge; returns the triples to train on and one record per refinement."""
    from online_cut.judge_setup import configured_judge
    from samplers.factory import open_sampler

    negatives = [i for i, t in enumerate(triples) if t.negative]
    items = [JudgeItem(instruction=triples[i].instruction, input=triples[i].input, response=triples[i].response)
             for i in negatives]
    judge = configured_judge(config.judge)
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
