"""The steps of an online round as plain functions (docs/architecture.md, "The online round"), tested without Prefect.

Every step first asks the store whether it is already done (its seconds are recorded in
`rounds`) and writes its results and its "done" mark in one transaction, so a run killed
anywhere and started again continues from the first unfinished step without duplicating a
sample, a judgment or an adapter. The Prefect tasks in `tasks/` are thin wrappers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from judges.base import Judge
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.cache import stored_judgment
from judges.judgment import JudgeItem
from online_cut import lineage
from online_cut.config import Config
from cut.fingerprint import read_fingerprint
from samplers.base import AdapterCheck, Sampler
from samplers.prompts import read_prompt_file, round_prompts, suite_prompts
from samplers.records import Prompt, SamplingSettings
from storage import records
from storage.store import Store

if TYPE_CHECKING:
    from cut.data import Triple

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Told (done, total) as a step's items finish."""

# Refinements are sampled, judged and stored this many negatives at a time: a killed refine
# step samples again at most one chunk, never a stored refinement.
REFINE_CHUNK = 16
EVAL_SETTINGS = SamplingSettings(n=1, temperature=0.0, max_tokens=32)


@dataclass
class RunContext:
    """What every step of one alignment run needs."""

    config: Config
    run: str
    store: Store
    base_model: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_model = self.config.model.name_or_path()

    def state(self, round: int) -> records.RoundState:
        state = self.store.round_state(self.run, round)
        if state is None:
            raise RuntimeError(f"run {self.run!r} round {round} was never started")
        return state

    def adapter(self, adapter_id: str | None) -> records.Adapter | None:
        if adapter_id is None:
            return None
        return next(a for a in self.store.adapters(self.run) if a.adapter_id == adapter_id)

    def live_adapter(self) -> records.Adapter | None:
        """The adapter the next round samples from (None: the base model)."""
        return lineage.live_adapter(self.store, self.run)


def _stored_prompt(prompt: Prompt, source: str) -> records.Prompt:
    return records.Prompt(instruction=prompt.instruction, input=prompt.input, reference=prompt.metadata, source=source)


def _attach(sampler: Sampler, adapter: records.Adapter | None) -> AdapterCheck | None:
    """Attach the adapter, checked against the fingerprint the store holds for it (a folder
    overwritten by another round's adapter fails); None for the base model."""
    if adapter is None:
        sampler.attach(None)
        return None
    return sampler.attach(Path(adapter.path), name=adapter.adapter_id, expect_change=True,
                          fingerprint=lineage.stored_fingerprint(adapter))


def _stored_check(ctx: RunContext, round: int, step: str, check: AdapterCheck) -> records.AdapterCheck:
    fingerprint, tolerance = check.fingerprint, check.tolerance
    return records.AdapterCheck(
        run=ctx.run, round=round, step=step, adapter_id=check.adapter, backend=check.backend,
        precision=check.precision, differing_outputs=check.differing_outputs, max_logprob_diff=check.max_logprob_diff,
        fingerprint_max_abs=fingerprint and fingerprint.max_abs, fingerprint_mean_abs=fingerprint and fingerprint.mean_abs,
        fingerprint_tokens=fingerprint and fingerprint.tokens, tolerance_max_abs=tolerance and tolerance.max_abs,
        tolerance_mean_abs=tolerance and tolerance.mean_abs,
    )


def start_round(ctx: RunContext, round: int) -> records.RoundState:
    """Open round `round` on the live adapter, or return its state if it was opened before."""
    state = ctx.store.round_state(ctx.run, round)
    if state is None:
        live = ctx.live_adapter()
        ctx.store.start_round(ctx.run, round, adapter_in=live.adapter_id if live else None)
        state = ctx.state(round)
    return state


def sample(ctx: RunContext, sampler: Sampler, round: int) -> int:
    """Sample the round's instructions from its input adapter; returns the responses stored."""
    state = ctx.state(round)
    if state.sample_s is not None:
        return 0
    started = time.perf_counter()
    prompts = round_prompts(ctx.config.prompts, round)
    log.info("round %d: sampling %d prompts x %d from %s", round, len(prompts), ctx.config.sampler.n,
             state.adapter_in or "the base model")
    check = _attach(sampler, ctx.adapter(state.adapter_in))
    samples = sampler.sample(prompts)
    source = ctx.config.prompts.suite or str(ctx.config.prompts.file)
    stored_prompts = {p.prompt_id: _stored_prompt(p, source) for p in prompts}
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
            tx.add_adapter_check(_stored_check(ctx, round, "sample", check))
        tx.record_round_step(ctx.run, round, "sample", time.perf_counter() - started)
    return added


def unjudged_items(ctx: RunContext, round: int, judge_id: str) -> list[JudgeItem]:
    """The round's responses this judge has no usable judgment of yet."""
    rows = ctx.store.query(
        "SELECT r.response_id, p.instruction, p.input, p.reference, r.text FROM responses r "
        "JOIN prompts p USING (prompt_id) WHERE r.run = ? AND r.round = ? AND r.response_id NOT IN "
        "(SELECT response_id FROM judgments WHERE judge = ? AND verdict <> 'failed') ORDER BY r.response_id",
        [ctx.run, round, judge_id],
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
    items = unjudged_items(ctx, round, judge.judge_id)
    pool = ctx.config.placement.judge
    log.info("round %d: judging %d responses with %s%s", round, len(items), judge.judge_id,
             f" on work pool {pool}" if pool else "")
    if pool is not None:
        from online_cut.placement import PlacedJudge, step_url

        judge = PlacedJudge(judge, ctx.config, step_url(ctx.config.placement, ctx.run, round, "judge"))
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
    added = ctx.store.add_judgments(stored_judgment(i.response_id, judge.judge_id, v) for i, v in zip(items, verdicts))
    ctx.store.record_round_step(ctx.run, round, "judge", time.perf_counter() - started)
    return added


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
    from online_cut.refine import refine_responses, refinement_settings

    state = ctx.state(round)
    if state.refine_s is not None:
        return 0
    started = time.perf_counter()
    pending = unrefined_negatives(ctx, round, judge.judge_id)
    log.info("round %d: refining %d negatives with %s, judged by %s", round, len(pending),
             state.adapter_in or "the base model", judge.judge_id)
    settings = refinement_settings(ctx.config.sampler)
    if pending:
        _attach(sampler, ctx.adapter(state.adapter_in))
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


def adapter_dir(ctx: RunContext, round: int) -> Path:
    return ctx.config.storage.adapters_dir / ctx.run / f"round-{round}"


def training_triples(ctx: RunContext, round: int, judge_id: str) -> list[records.Triple]:
    """The round's triples by this judge, plus `replay.share` as many drawn from the run's earlier rounds.

    The draw is seeded by run and round, so a resumed round trains on the same set.
    """
    judged = [t for t in ctx.store.triples(ctx.run) if t.judge == judge_id and t.round <= round]
    own = [t for t in judged if t.round == round]
    earlier = [t for t in judged if t.round < round]
    replayed = min(len(earlier), int(ctx.config.replay.share * len(own) + 0.5))
    return own + random.Random(f"{ctx.run}/{round}").sample(earlier, replayed)


def _nothing_to_train(objective: str, triples: list[Triple], seed: int) -> str | None:
    """Why the objective has nothing to learn from these triples, or None when it has."""
    from cut.pairs import preference_pairs

    if not triples:
        return "no judged triple"
    if objective == "sft" and all(t.negative for t in triples):
        return f"no positive among {len(triples)} triples (sft trains on positives only)"
    if objective == "dpo" and not preference_pairs(triples, seed):
        return (f"no DPO pair among {len(triples)} triples (no prompt has responses with different verdicts or "
                "scores)")
    return None


def train(ctx: RunContext, round: int, judge_id: str) -> records.Adapter | None:
    """Train a candidate adapter on the round's triples, continuing the round's input adapter.

    Returns the candidate (also when a previous attempt trained it), or None when the round
    has no triple to learn from.
    """
    from cut.data import Triple
    from cut.trainer import train as train_adapter
    from online_cut.launch import train_launched
    from online_cut.placement import step_url, train_on_pool

    state = ctx.state(round)
    candidate = next((a for a in ctx.store.adapters(ctx.run) if a.round == round), None)
    if state.train_s is not None:
        return candidate
    started = time.perf_counter()
    stored = training_triples(ctx, round, judge_id)
    triples = [Triple.judged(t.instruction, t.input, t.response, t.verdict, t.judgment, t.score) for t in stored]
    if ctx.config.cut.objective == "ilf" and triples:
        stored, triples = _ilf_training_set(ctx, round, judge_id, stored, triples)
    reason = _nothing_to_train(ctx.config.cut.objective, triples, ctx.config.cut.seed)
    if reason is not None:
        log.warning("round %d: %s; nothing trained", round, reason)
        ctx.store.record_round_step(ctx.run, round, "train", time.perf_counter() - started)
        return None
    parent = ctx.adapter(state.adapter_in)
    out_dir = adapter_dir(ctx, round)
    log.info("round %d: training %s on %d triples from %s%s", round, ctx.config.cut.objective, len(triples),
             state.adapter_in or "the base model",
             f" on work pool {ctx.config.placement.train}" if ctx.config.placement.train else "")
    init_adapter = Path(parent.path) if parent else None
    config = ctx.config.model_copy(update={"cut": ctx.config.cut.for_round(round)})
    if config.placement.train is not None:
        url = step_url(config.placement, ctx.run, round, "train")
        result = train_on_pool(config, triples, out_dir, init_adapter, url)
    elif config.cut.launcher == "accelerate":
        result = train_launched(config, triples, out_dir, init_adapter)
    else:
        result = train_adapter(config.cut, ctx.base_model, triples, out_dir, init_adapter=init_adapter)
    candidate = records.Adapter(
        adapter_id=f"{ctx.run}-round-{round}",
        run=ctx.run,
        round=round,
        path=str(out_dir),
        parent_id=parent.adapter_id if parent else None,
        fingerprint=fingerprint.as_dict() if (fingerprint := read_fingerprint(out_dir)) else None,
    )
    steps = [
        records.TrainingStep(
            run=ctx.run, round=round, **{k: v for k, v in m.items() if k in records.TrainingStep.model_fields}
        )
        for m in result.steps
    ]
    flagged = [
        records.FlaggedToken(
            run=ctx.run, round=round, response_id=stored[index].response_id, token_index=token.index,
            token=token.token, p_aligned=token.p_aligned, p_misaligned=token.p_misaligned,
        )
        for index, tokens in result.flagged.items()
        for token in tokens
    ]
    with ctx.store.transaction() as tx:
        tx.add_adapter(candidate)
        tx.add_training_steps(steps)
        tx.add_flagged_tokens(flagged)
        tx.record_round_step(ctx.run, round, "train", time.perf_counter() - started)
    return candidate


def _ilf_training_set(ctx: RunContext, round: int, judge_id: str, stored: list[records.Triple],
                      triples: list[Triple]) -> tuple[list[records.Triple], list[Triple]]:
    """ilf's triples (and the stored ones they come from): the positives, and each negative whose refinement
    the judge accepted, as (x, y*)."""
    from online_cut.refine import ilf_triples

    accepted_text = {f.response_id: f.text for f in ctx.store.refinements(ctx.run, judge_id) if f.accepted}
    accepted = {i: accepted_text[s.response_id] for i, s in enumerate(stored) if s.response_id in accepted_text}
    kept = [s for s in stored if s.verdict == "positive"] + [s for i, s in enumerate(stored) if i in accepted]
    if not accepted:
        log.warning("round %d: ilf: no refinement accepted among %d negatives; training on the %d positives only",
                    round, sum(s.verdict == "negative" for s in stored), len(kept))
    else:
        log.info("round %d: ilf: training on %d positives and %d accepted refinements", round,
                 len(kept) - len(accepted), len(accepted))
    return kept, ilf_triples(triples, accepted)


def suite_critic(suite: str) -> Judge:
    """The rule critic that scores a held-out suite."""
    return build_judge(JudgeConfig(kind="rule", rule=suite))


@dataclass(frozen=True)
class HeldOutSet:
    name: str  # the suite, "<suite>:dev", or "file:<file name>"
    prompts: list[Prompt]
    judge: Judge


def held_out_sets(ctx: RunContext, judge: Judge) -> list[HeldOutSet]:
    """The configured held-out sets: each suite's held-out split (or its dev prompts, named
    `<suite>:dev`) with its rule critic, and an instruction file scored by the run's judge."""
    rule = ctx.config.evaluation
    if rule.split == "dev":
        sets = [HeldOutSet(f"{suite}:dev", suite_prompts(suite, "train", rule.n, seed="dev"), suite_critic(suite))
                for suite in rule.suites]
    else:
        sets = [HeldOutSet(suite, suite_prompts(suite, "heldout", rule.n), suite_critic(suite)) for suite in rule.suites]
    if rule.file is not None:
        sets.append(HeldOutSet(f"file:{rule.file.name}", read_prompt_file(rule.file)[: rule.n], judge))
    return sets


@dataclass(frozen=True)
class HeldOutScore:
    """How an adapter's greedy answers to a held-out set were judged."""

    positive_share: float  # answers judged positive: for a multi-part task, whole answers right
    mean_score: float | None  # the judge's mean score (rule critics: share of parts right); None: it gives none
    n: int  # answers judged
    failed: int  # answers the judge could not judge, left out of both figures

    def value(self, metric: str) -> float:
        """The figure the gate compares (`evaluation.metric`)."""
        if metric == "score":
            if self.mean_score is None:
                raise RuntimeError("evaluation.metric is score, but a held-out set's judge gives no score")
            return self.mean_score
        return self.positive_share


def held_out_score(sampler: Sampler, adapter: records.Adapter | None, held_out: HeldOutSet) -> HeldOutScore:
    """How the set's judge judged the greedy answers of the adapter to the held-out prompts."""
    _attach(sampler, adapter)
    samples = sampler.sample(held_out.prompts, EVAL_SETTINGS)
    by_id = {p.prompt_id: p for p in held_out.prompts}
    items = [
        JudgeItem(instruction=by_id[s.prompt_id].instruction, input=by_id[s.prompt_id].input, response=s.text,
                  metadata=by_id[s.prompt_id].metadata)
        for s in samples
    ]
    verdicts = held_out.judge.judge_many_sync(items)
    judged = [v for v in verdicts if v.status == "ok"]
    if not judged:
        raise RuntimeError(f"held-out set {held_out.name}: the judge {held_out.judge.judge_id} failed on every answer")
    if len(judged) < len(verdicts):
        log.warning("held-out set %s: %d of %d answers could not be judged and are left out of its score",
                    held_out.name, len(verdicts) - len(judged), len(verdicts))
    scores = [v.score for v in judged if v.score is not None]
    return HeldOutScore(
        positive_share=sum(v.verdict == "positive" for v in judged) / len(judged),
        mean_score=sum(scores) / len(scores) if len(scores) == len(judged) else None,
        n=len(judged),
        failed=len(verdicts) - len(judged),
    )


def measure(ctx: RunContext, sampler: Sampler, round: int, role: str, adapter: records.Adapter | None,
            held_out: HeldOutSet) -> records.Evaluation:
    """The adapter's evaluation on a held-out set: `evaluation.metric` as its score, both figures in details."""
    measured = held_out_score(sampler, adapter, held_out)
    metric = ctx.config.evaluation.metric
    log.info("round %d: held-out %s on %s (%s): %s %.3f over %d prompts", round, role, held_out.name,
             adapter.adapter_id if adapter else "base model", metric, measured.value(metric), measured.n)
    return records.Evaluation(
        run=ctx.run, round=round, role=role, suite=held_out.name, score=measured.value(metric), n=measured.n,
        adapter_id=adapter.adapter_id if adapter else None, judge=held_out.judge.judge_id,
        details={"positive_share": measured.positive_share, "mean_score": measured.mean_score,
                 "failed": measured.failed, "metric": metric},
    )


def _known_score(ctx: RunContext, adapter: records.Adapter | None, suite: str) -> records.Evaluation | None:
    """An adapter's held-out evaluation measured in an earlier round of this run, if any."""
    rows = ctx.store.query(
        "SELECT * EXCLUDE (created_at) FROM evaluations WHERE run = ? AND suite = ? "
        "AND adapter_id IS NOT DISTINCT FROM ? ORDER BY round DESC LIMIT 1",
        [ctx.run, suite, adapter.adapter_id if adapter else None],
    )
    return records.Evaluation.model_validate(rows[0]) if rows else None


def evaluate(ctx: RunContext, sampler: Sampler, judge: Judge, round: int,
             candidate: records.Adapter | None) -> dict[str, dict[str, float]]:
    """Held-out scores per set of the incumbent (the round's input adapter) and the candidate."""
    state = ctx.state(round)
    if state.eval_s is None:
        started = time.perf_counter()
        incumbent = ctx.adapter(state.adapter_in)
        sets = held_out_sets(ctx, judge)
        log.info("round %d: evaluating on %s", round, ", ".join(h.name for h in sets))
        evaluations = []
        for role, adapter in (("incumbent", incumbent), ("candidate", candidate)):
            if role == "candidate" and candidate is None:
                continue
            for held_out in sets:
                known = _known_score(ctx, adapter, held_out.name) if role == "incumbent" else None
                if known is not None:
                    evaluations.append(known.model_copy(update={"round": round, "role": role}))
                    continue
                evaluations.append(measure(ctx, sampler, round, role, adapter, held_out))
        with ctx.store.transaction() as tx:
            tx.add_evaluations(evaluations)
            tx.record_round_step(ctx.run, round, "eval", time.perf_counter() - started)
    rows = ctx.store.query("SELECT role, suite, score FROM evaluations WHERE run = ? AND round = ?", [ctx.run, round])
    scores: dict[str, dict[str, float]] = {}
    for row in rows:
        scores.setdefault(row["role"], {})[row["suite"]] = row["score"]
    return scores


def gate(ctx: RunContext, scores: dict[str, dict[str, float]]) -> tuple[bool, str]:
    """Whether the candidate may replace the incumbent, and why (mean over the suites)."""
    if "candidate" not in scores:
        return False, "no candidate: the round had nothing to train on (no triple, or for dpo no pair)"
    mean = {role: sum(by_suite.values()) / len(by_suite) for role, by_suite in scores.items()}
    candidate, incumbent = mean["candidate"], mean["incumbent"]
    rule = ctx.config.evaluation
    if rule.gate == "improve":
        passed = candidate > incumbent
        need = f"> {incumbent:.3f}"
    else:
        passed = candidate >= incumbent - rule.margin
        need = f">= {incumbent:.3f} - {rule.margin}"
    return passed, f"held-out score {candidate:.3f} vs incumbent {incumbent:.3f} (needs {need})"


def promote(ctx: RunContext, round: int, candidate: records.Adapter | None, scores: dict[str, dict[str, float]],
            wall_s: float) -> bool:
    """Apply the gate: the candidate goes live or is rejected; the round is closed."""
    state = ctx.state(round)
    if state.gate_decision is not None:
        return state.gate_decision == "promoted"
    passed, reason = gate(ctx, scores)
    with ctx.store.transaction() as tx:
        if candidate is not None:
            if passed and state.adapter_in is not None:
                tx.set_adapter_status(state.adapter_in, "retired", f"replaced by {candidate.adapter_id}")
            tx.set_adapter_status(candidate.adapter_id, "live" if passed else "rejected", reason)
        tx.finish_round(
            ctx.run, round, wall_s=wall_s,
            adapter_out=candidate.adapter_id if passed and candidate else state.adapter_in,
            gate_decision="promoted" if passed else "rejected", gate_reason=reason,
        )
    log.info("round %s: %s — %s", round, "promoted" if passed else "rejected", reason)
    return passed


def mirror_round(ctx: RunContext, round: int) -> None:
    """Copy the round's Parquet export and candidate adapter to `storage.mirror`, where other machines read them."""
    mirror = ctx.config.storage.mirror
    if mirror is None:
        return
    from storage.shared import join, put_folder

    export = ctx.config.storage.exports_dir / f"run={ctx.run}" / f"round={round}"
    if export.is_dir():
        put_folder(export, join(mirror, "exports", f"run={ctx.run}", f"round={round}"))
    candidate = adapter_dir(ctx, round)
    if candidate.is_dir():
        put_folder(candidate, join(mirror, "adapters", ctx.run, f"round-{round}"))
    log.info("round %d: export and adapter copied to %s", round, mirror)
