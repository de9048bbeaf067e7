"""The train step: a candidate adapter trained on the round's triples, from the round's input adapter.

Where the training runs (in this process, under `accelerate launch`, on a work pool) is the
caller's choice: the step is given a `Trainer` (tasks/training.py picks it).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cut.fingerprint import read_fingerprint
from judges.human import judged_by
from online_cut.config import Config
from rounds.context import RunContext
from rounds.refine import ilf_triples
from storage import records

if TYPE_CHECKING:  # torch comes with the trainer; a judging worker never needs it
    from cut.data import Triple
    from cut.trainer import TrainResult

log = logging.getLogger(__name__)


class Trainer(Protocol):
    def __call__(self, config: Config, triples: list[Triple], out_dir: Path, init_adapter: Path | None) -> TrainResult:
        """Train `config.cut.objective` on the triples from `init_adapter` (None: a fresh LoRA) into `out_dir`."""
        ...


def training_triples(ctx: RunContext, round: int, judge_id: str) -> list[records.Triple]:
    """The round's triples by this judge (`PEOPLE`: by any person; a response two people judged, by the first),
    plus `replay.share` as many drawn from the run's earlier rounds.

    The draw is seeded by run and round, so a resumed round trains on the same set.
    """
    judged = [t for t in ctx.store.triples(ctx.run) if judged_by(t.judge, judge_id) and t.round <= round]
    first = {}  # one judgment per response: where two people judged it, the first one stored
    for triple in sorted(judged, key=lambda t: t.created_at):
        first.setdefault(triple.response_id, triple)
    judged = [t for t in judged if first[t.response_id] is t]
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


def train(ctx: RunContext, round: int, judge_id: str, trainer: Trainer) -> records.Adapter | None:
    """Train a candidate adapter on the round's triples with `trainer`, continuing the round's input adapter.

    Returns the candidate (also when a previous attempt trained it), or None when the round
    has no triple to learn from.
    """
    from cut.data import Triple

    state = ctx.state(round)
    candidate = next((a for a in ctx.store.adapters(ctx.run) if a.round == round), None)
    if state.train_s is not None:
        return candidate
    started = time.perf_counter()
    stored = training_triples(ctx, round, judge_id)
    triples = [Triple.judged(t.instruction, t.input, t.response, t.verdict, t.judgment, t.score, tuple(t.spans or ()),
                             t.truncated) for t in stored]
    if ctx.config.cut.objective == "ilf" and triples:
        stored, triples = _ilf_training_set(ctx, round, judge_id, stored, triples)
    reason = _nothing_to_train(ctx.config.cut.objective, triples, ctx.config.cut.seed)
    if reason is not None:
        log.warning("round %d: %s; nothing trained", round, reason)
        ctx.store.record_round_step(ctx.run, round, "train", time.perf_counter() - started)
        return None
    parent = ctx.adapter(state.adapter_in)
    out_dir = ctx.adapter_dir(round)
    log.info("round %d: training %s on %d triples from %s", round, ctx.config.cut.objective, len(triples),
             state.adapter_in or "the base model")
    settings = ctx.config.cut.for_round(round)
    if settings.objective == "ilf":
        # Refined above: what is left to train is MLE on positives, sft's rows. Asking a launched or placed
        # trainer for ilf would refine again there, starting a second engine.
        settings = settings.model_copy(update={"objective": "sft"})
    config = ctx.config.model_copy(update={"cut": settings})
    result = trainer(config, triples, out_dir, Path(parent.path) if parent else None)
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
    found = result.detection
    with ctx.store.transaction() as tx:
        tx.add_adapter(candidate)
        tx.add_training_steps(steps)
        tx.add_flagged_tokens(flagged)
        if found is not None:
            tx.add_detection(records.Detection(
                run=ctx.run, round=round, rows=found.rows, span_tokens=found.span_tokens,
                contrast_flagged=found.contrast_flagged, flagged_in_spans=found.flagged_in_spans, precision=found.precision,
                recall=found.recall, f1=found.f1,
            ))
            log.info("round %d: contrast detection against the judges' spans: precision %s, recall %s over %d rows",
                     round, _share(found.precision), _share(found.recall), found.rows)
        tx.record_round_step(ctx.run, round, "train", time.perf_counter() - started)
    return candidate


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _ilf_training_set(ctx: RunContext, round: int, judge_id: str, stored: list[records.Triple],
                      triples: list[Triple]) -> tuple[list[records.Triple], list[Triple]]:
    """ilf's triples (and the stored ones they come from): the positives, and each negative whose refinement
    the judge accepted, as (x, y*)."""
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
