"""The judgment cache in the DuckDB store: found by (instruction, input, response, judge id),
failed judgments kept but never reused, pipeline responses judged under their own ids."""

from __future__ import annotations

from pathlib import Path

from judges.cache import StoreJudgmentCache
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.judgment import JudgeItem, Judgment
from storage.records import Prompt, Response
from storage.store import Store

JUDGE = "openai:gpt-4o@0123456789ab"


def _ok(text: str) -> Judgment:
    return Judgment(status="ok", verdict="negative", judgment=text, judge_id=JUDGE, input_tokens=50, output_tokens=9)


def test_an_offline_item_is_found_again_by_content_and_judge(tmp_path: Path) -> None:
    cache = StoreJudgmentCache(Store(tmp_path / "store.duckdb"))
    item = JudgeItem(instruction="What is 47 + 38?", response="75")
    cache.put_many(JUDGE, [(item, _ok("47 + 38 = 85, not 75."))])

    [found] = cache.get_many(JUDGE, [JudgeItem(instruction="What is 47 + 38?", response="75")])
    assert found is not None and found.judgment == "47 + 38 = 85, not 75." and found.input_tokens == 50
    assert cache.get_many("openai:gpt-4o@ffffffffffff", [item]) == [None], "another judge config is another key"
    assert cache.get_many(JUDGE, [item.model_copy(update={"response": "85"})]) == [None]


def test_a_failed_judgment_is_stored_but_judged_again_and_then_replaced(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.duckdb")
    cache = StoreJudgmentCache(store)
    item = JudgeItem(instruction="What is 1 + 2?", response="3")
    cache.put_many(JUDGE, [(item, Judgment.failed(JUDGE, "request timed out after retries"))])
    assert cache.get_many(JUDGE, [item]) == [None]

    cache.put_many(JUDGE, [(item, _ok("Fine."))])
    assert store.query("SELECT verdict, error FROM judgments") == [{"verdict": "negative", "error": None}]


def test_pipeline_responses_get_their_judgment_under_their_own_ids(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.duckdb")
    prompt = Prompt(instruction="What is 2 + 2?")
    responses = [Response(run="r1", round=0, prompt_id=prompt.prompt_id, text="5", sample_index=i) for i in range(2)]
    store.add_prompts([prompt])
    store.add_responses(responses)
    items = [JudgeItem(instruction=prompt.instruction, response="5", response_id=r.response_id) for r in responses]

    # Nothing listens on port 9: a request would fail, so both answers must come from the cache.
    cache = StoreJudgmentCache(store)
    judge = build_judge(JudgeConfig(kind="openai", base_url="http://127.0.0.1:9/v1", max_retries=0), cache=cache)
    cache.put_many(judge.judge_id, [(items[0], _ok("2 + 2 = 4, not 5."))])
    judgments = judge.judge_many_sync(items)

    assert [j.cached for j in judgments] == [True, True]
    stored = store.query("SELECT response_id, judgment FROM judgments ORDER BY response_id")
    assert sorted(r["response_id"] for r in stored) == sorted(r.response_id for r in responses)
    assert {r["judgment"] for r in stored} == {"2 + 2 = 4, not 5."}


def test_an_offline_item_of_a_stored_response_is_judged_under_that_response(tmp_path: Path) -> None:
    """A file imported (its judgments: the file's) and judged again offline: both judges judge the same responses,
    so `online-cut judges agree` compares them."""
    store = Store(tmp_path / "store.duckdb")
    prompt = Prompt(instruction="What is 2 + 2?")
    imported = Response(run="paper", round=0, prompt_id=prompt.prompt_id, text="5")
    store.add_prompts([prompt])
    store.add_responses([imported])
    cache = StoreJudgmentCache(store)
    cache.put_many(JUDGE, [(JudgeItem(instruction="What is 2 + 2?", response="5"), _ok("2 + 2 = 4.")),
                           (JudgeItem(instruction="What is 2 + 2?", response="6"), _ok("2 + 2 = 4, not 6."))])
    rows = store.query("SELECT r.run, r.text FROM judgments j JOIN responses r USING (response_id) ORDER BY r.text")
    assert [(row["run"], row["text"]) for row in rows] == [("paper", "5"), ("offline-judge", "6")]
