"""A model judge's score travels from its reply to `judgments.score` and the `triples` view."""

from __future__ import annotations

from pathlib import Path

from fault_server import running_stand_in

from judges.cache import StoreJudgmentCache
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.judgment import JudgeItem
from storage.store import Store


def test_a_model_judges_score_is_stored_beside_its_verdict(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.duckdb")
    items = [JudgeItem(instruction=f"What is {i} + {i}?", response=str(2 * i)) for i in range(6)]
    with running_stand_in(fault_rate=0.0) as base_url:
        judge = build_judge(JudgeConfig(kind="openai", model="stand-in", base_url=base_url), cache=StoreJudgmentCache(store))
        judged = judge.judge_many_sync(items)

    assert all(j.status == "ok" and 1 <= j.score <= 10 for j in judged)
    # The stand-in scores positives 7-10 and negatives 1-6, as the paper's GPT-4 annotations split at 7.
    assert all((j.score >= 7) == (j.verdict == "positive") for j in judged)
    stored = store.query("SELECT response, verdict, score FROM triples ORDER BY response")
    by_response = {j_item.response: j for j_item, j in zip(items, judged)}
    assert [(row["verdict"], row["score"]) for row in stored] == [
        (by_response[row["response"]].verdict, by_response[row["response"]].score) for row in stored
    ]
    assert len(stored) == len(items)
