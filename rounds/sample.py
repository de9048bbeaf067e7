"""The sample step: the round's instructions answered by its input adapter."""

from __future__ import annotations

import logging
import time

from rounds.context import RunContext, attach, stored_check
from samplers.base import Sampler
from samplers.prompts import round_prompts
from samplers.records import Prompt, Sample, SamplingSettings
from storage import records

log = logging.getLogger(__name__)

FIRST_PROMPTS = 4


def stored_prompt(prompt: Prompt, source: str) -> records.Prompt:
    return records.Prompt(instruction=prompt.instruction, input=prompt.input, reference=prompt.metadata, source=source)


def responses_of(ctx: RunContext, round: int, adapter_in: str | None, samples: list[Sample]) -> list[records.Response]:
    return [
        records.Response(
            run=ctx.run,
            round=round,
            prompt_id=s.prompt_id,
            text=s.text,
            sample_index=s.sample_index,
            adapter_id=adapter_in,
            finish_reason=s.finish_reason,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
            sampling=s.params,
        )
        for s in samples
    ]


def sample(ctx: RunContext, sampler: Sampler, round: int) -> int:
    """Sample the round's instructions from its input adapter; returns the responses stored.

    The first `FIRST_PROMPTS` are sampled and stored on their own, so a round has responses to
    show seconds after its engine is up; the rest go to the engine in one batch, its fastest way,
    and are stored with the step's end. A rerun after a crash between the two stores the rest
    (stored responses keep their ids).
    """
    state = ctx.state(round)
    if state.sample_s is not None:
        return 0
    started = time.perf_counter()
    prompts = round_prompts(ctx.config.prompts, round)
    log.info("round %d: sampling %d prompts x %d from %s", round, len(prompts), ctx.config.sampler.n,
             state.adapter_in or "the base model")
    check = attach(sampler, ctx.adapter(state.adapter_in))
    settings = SamplingSettings.from_config(ctx.config.sampler)
    source = ctx.config.prompts.suite or str(ctx.config.prompts.file)
    first, rest = prompts[:FIRST_PROMPTS], prompts[FIRST_PROMPTS:]
    with ctx.store.transaction() as tx:
        tx.add_prompts(stored_prompt(p, source) for p in first)
        added = tx.add_responses(responses_of(ctx, round, state.adapter_in, sampler.sample(first, settings)))
    samples = sampler.sample(rest, settings)
    with ctx.store.transaction() as tx:
        tx.add_prompts(stored_prompt(p, source) for p in rest)
        added += tx.add_responses(responses_of(ctx, round, state.adapter_in, samples))
        if check is not None:
            tx.add_adapter_check(stored_check(ctx, round, "sample", check))
        tx.record_round_step(ctx.run, round, "sample", time.perf_counter() - started)
    return added
