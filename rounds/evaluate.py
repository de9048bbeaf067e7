"""The evaluate step: the incumbent's and the candidate's greedy answers to the held-out sets, judged."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from judges.base import Judge
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.judgment import JudgeItem
from rounds.context import RunContext, attach, stored_check
from samplers.base import AdapterCheck, Sampler
from samplers.prompts import SUITE_RULES, TRANSFER_SUITES, read_prompt_file, suite_prompts
from samplers.records import Prompt, SamplingSettings
from storage import records

log = logging.getLogger(__name__)

EVAL_SETTINGS = SamplingSettings(n=1, temperature=0.0, max_tokens=32)


def suite_critic(suite: str) -> Judge:
    """The rule critic that scores a held-out suite."""
    return build_judge(JudgeConfig(kind="rule", rule=SUITE_RULES[suite]))


@dataclass(frozen=True)
class HeldOutSet:
    name: str  # the suite, "<suite>:dev", or "file:<file name>"
    prompts: list[Prompt]
    judge: Judge


def held_out_sets(ctx: RunContext, judge: Judge) -> list[HeldOutSet]:
    """The configured held-out sets: each suite's held-out split (or its dev prompts, named
    `<suite>:dev`; a transfer suite has none) with its rule critic, and an instruction file scored by the run's judge."""
    rule = ctx.config.evaluation
    if rule.split == "dev":
        transfer = [suite for suite in rule.suites if suite in TRANSFER_SUITES]
        if transfer:
            log.info("evaluation.split is dev: the transfer suites %s are held out whole and not scored", ", ".join(transfer))
        sets = [HeldOutSet(f"{suite}:dev", suite_prompts(suite, "train", rule.n, seed="dev"), suite_critic(suite))
                for suite in rule.suites if suite not in transfer]
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
    check: AdapterCheck | None  # the attach's proof that the adapter scored was the one served (None: base model)

    def value(self, metric: str) -> float:
        """The figure the gate compares (`evaluation.metric`)."""
        if metric == "score":
            if self.mean_score is None:
                raise RuntimeError("evaluation.metric is score, but a held-out set's judge gives no score")
            return self.mean_score
        return self.positive_share


def held_out_score(sampler: Sampler, adapter: records.Adapter | None, held_out: HeldOutSet) -> HeldOutScore:
    """How the set's judge judged the greedy answers of the adapter to the held-out prompts."""
    check = attach(sampler, adapter)
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
        check=check,
    )


def measure(ctx: RunContext, sampler: Sampler, round: int, role: str, adapter: records.Adapter | None,
            held_out: HeldOutSet) -> tuple[records.Evaluation, AdapterCheck | None]:
    """The adapter's evaluation on a held-out set (`evaluation.metric` as its score, both figures in
    details) and its attach's check."""
    measured = held_out_score(sampler, adapter, held_out)
    metric = ctx.config.evaluation.metric
    log.info("round %d: held-out %s on %s (%s): %s %.3f over %d prompts", round, role, held_out.name,
             adapter.adapter_id if adapter else "base model", metric, measured.value(metric), measured.n)
    return records.Evaluation(
        run=ctx.run, round=round, role=role, suite=held_out.name, score=measured.value(metric), n=measured.n,
        adapter_id=adapter.adapter_id if adapter else None, judge=held_out.judge.judge_id,
        details={"positive_share": measured.positive_share, "mean_score": measured.mean_score,
                 "failed": measured.failed, "metric": metric},
    ), measured.check


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
        evaluations, checks = [], {}
        for role, adapter in (("incumbent", incumbent), ("candidate", candidate)):
            if role == "candidate" and candidate is None:
                continue
            for held_out in sets:
                known = _known_score(ctx, adapter, held_out.name) if role == "incumbent" else None
                if known is not None:
                    evaluations.append(known.model_copy(update={"round": round, "role": role}))
                    continue
                evaluation, check = measure(ctx, sampler, round, role, adapter, held_out)
                evaluations.append(evaluation)
                if check is not None:  # one row per adapter: every set attaches it the same way
                    checks[check.adapter] = stored_check(ctx, round, "evaluate", check)
        with ctx.store.transaction() as tx:
            tx.add_evaluations(evaluations)
            for check in checks.values():
                tx.add_adapter_check(check)
            tx.record_round_step(ctx.run, round, "eval", time.perf_counter() - started)
    rows = ctx.store.query("SELECT role, suite, score FROM evaluations WHERE run = ? AND round = ?", [ctx.run, round])
    scores: dict[str, dict[str, float]] = {}
    for row in rows:
        scores.setdefault(row["role"], {})[row["suite"]] = row["score"]
    return scores
