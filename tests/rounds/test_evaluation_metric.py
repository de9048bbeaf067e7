"""Held-out scores of a multi-part task: the whole-answer share and the part accuracy are both
stored, and `evaluation.metric` says which one the gate compares."""

from __future__ import annotations

from pathlib import Path

import pytest

from rounds import context, evaluate as evaluating
from online_cut.config import parse_config
from samplers.records import Sample
from storage.store import Store


class TwoOfThreeRight:
    """Stands in for the engine: answers every sums prompt with its first two sums right and the third off by one."""

    def attach(self, adapter, name=None, expect_change=False) -> None:
        pass

    def sample(self, prompts, settings=None):
        def answer(prompt):
            sums = prompt.metadata["answers"]
            return ", ".join(map(str, [*sums[:2], sums[2] + 1]))

        return [Sample(p.prompt_id, 0, answer(p), "stop", 10, 3, None, {}) for p in prompts]


@pytest.mark.parametrize("metric, gate_score", [("verdict", 0.0), ("score", 2 / 3)])
def test_both_figures_are_stored_and_the_metric_picks_the_score(tmp_path: Path, tiny_model: Path, metric, gate_score):
    config = parse_config({"model": {"path": str(tiny_model)}, "prompts": {"suite": "sums"},
                           "storage": {"db": str(tmp_path / "store.duckdb")},
                           "evaluation": {"suites": ["sums"], "n": 20, "metric": metric}}, "test")
    ctx = context.RunContext(config, "metric", Store.from_config(config.storage))
    ctx.store.add_run(ctx.run)
    context.start_round(ctx, 1)
    scores = evaluating.evaluate(ctx, TwoOfThreeRight(), evaluating.suite_critic("sums"), 1, None)
    assert scores == {"incumbent": {"sums": pytest.approx(gate_score)}}
    [stored] = ctx.store.query("SELECT score, n, details FROM evaluations")
    assert stored["n"] == 20
    assert stored["details"] == {"positive_share": 0.0, "mean_score": pytest.approx(2 / 3), "failed": 0, "metric": metric}
