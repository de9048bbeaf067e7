"""The sample step: the round's instructions answered by its input adapter."""

from __future__ import annotations

import logging
import time

from rounds.context import RunContext, attach, stored_check
from samplers.base import Sampler
from samplers.prompts import round_prompts
from samplers.records import Prompt, SamplingSettings
from storage import records

log = logging.getLogger(__name__)


def stored_prompt(prompt: Prompt, source: str) -> records.Prompt:
    return records.Prompt(instruction=prompt.instruction, input=prompt.input, reference=prompt.metadata, source=source)


def sample(ctx: RunContext, sampler: Sampler, round: int) -> int:
    """Sample the round's instructions from its input adapter; returns the responses stored."""
    state = ctx.state(round)
    if state.sample_s is not None:
        return 0
    started = time.perf_counter()
    prompts = round_prompts(ctx.config.prompts, round)
    log.info("round %d: sampling %d prompts x %d from %s", round, len(prompts), ctx.config.sampler.n,
             state.adapter_in or "the base model")
    check = attach(sampler, ctx.adapter(state.adapter_in))
    samples = sampler.sample(prompts, SamplingSettings.from_config(ctx.config.sampler))
    source = ctx.config.prompts.suite or str(ctx.config.prompts.file)
    stored_prompts = {p.prompt_id: stored_prompt(p, source) for p in prompts}
    responses = [
        records.Response(
            run=ctx.run,
            round=round,
            prompt_id=stored_prompts[s.prompt_id].prompt_id,
            text=s.text,
            sample_index=s.sample_index,
            adapter_id=state.adapter_in,
            finish_reason=s.finish_reason,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
            sampling=s.params,
        )
        for s in samples
    ]
    with ctx.store.transaction() as tx:
        tx.add_prompts(stored_prompts.values())
        added = tx.add_responses(responses)
        if check is not None:
            tx.add_adapter_check(stored_check(ctx, round, "sample", check))
        tx.record_round_step(ctx.run, round, "sample", time.perf_counter() - started)
    return added
