"""The gate: the candidate goes live or is rejected on its held-out scores, and the round is closed."""

from __future__ import annotations

import logging

from rounds.context import RunContext
from storage import records

log = logging.getLogger(__name__)


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
        if candidate is not None and passed:
            tx.move_live(ctx.run, candidate.adapter_id, reason, f"replaced by {candidate.adapter_id}")
        elif candidate is not None:
            tx.set_adapter_status(candidate.adapter_id, "rejected", reason)
        tx.finish_round(
            ctx.run, round, wall_s=wall_s,
            adapter_out=candidate.adapter_id if passed and candidate else state.adapter_in,
            gate_decision="promoted" if passed else "rejected", gate_reason=reason,
        )
    log.info("round %s: %s — %s", round, "promoted" if passed else "rejected", reason)
    return passed
