"""The store API: idempotent writes, round bookkeeping, the views, the judgment cache, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from storage.migrations import MIGRATIONS
from storage.records import Adapter, Evaluation, FlaggedToken, Judgment, Prompt, Response, TrainingStep
from storage.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store.duckdb")


def _triple(store: Store, instruction: str, response: str, verdict: str, judgment: str | None = None, run="r", round=0):
    prompt = Prompt(instruction=instruction)
    answer = Response(run=run, round=round, prompt_id=prompt.prompt_id, text=response)
    with store.transaction() as tx:
        tx.add_prompts([prompt])
        tx.add_responses([answer])
        tx.add_judgments([Judgment(response_id=answer.response_id, judge="rule", verdict=verdict, judgment=judgment)])
    return answer


def test_migrations_are_recorded_by_name_and_applied_once(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    Store(path).add_run("r")
    Store(path).add_run("r")
    with duckdb.connect(str(path)) as db:
        names = [name for (name,) in db.execute("SELECT name FROM schema_version ORDER BY version").fetchall()]
    assert names == [m.__name__ for m in MIGRATIONS]


def test_store_opens_nothing_until_first_use(tmp_path: Path):
    Store(tmp_path / "store.duckdb")
    assert not (tmp_path / "store.duckdb").exists()


def test_repeated_writes_and_duplicate_batches_add_nothing(store: Store):
    prompts = [Prompt(instruction="2+2?"), Prompt(instruction="2+2?"), Prompt(instruction="3+3?")]
    responses = [Response(run="r", round=0, prompt_id=p.prompt_id, text="4") for p in prompts]
    assert store.add_prompts(prompts) == 2
    assert store.add_prompts(prompts) == 0
    assert store.add_responses(responses) == 2
    assert store.add_responses(responses) == 0
    steps = [TrainingStep(run="r", round=0, step=i, loss=1.0) for i in (0, 1, 1)]
    assert store.add_training_steps(steps) == 2
    assert store.add_training_steps(steps) == 0
    assert store.query("SELECT count(*) AS n FROM prompts")[0]["n"] == 2


def test_a_failed_judgment_is_replaced_by_a_result_but_a_result_is_kept(store: Store):
    prompt = Prompt(instruction="2+2?")
    answer = Response(run="r", round=0, prompt_id=prompt.prompt_id, text="5")
    store.add_prompts([prompt])
    store.add_responses([answer])
    judge = {"response_id": answer.response_id, "judge": "rule"}
    assert store.add_judgments([Judgment(**judge, verdict="failed", error="timeout")]) == 1
    assert store.triples() == []
    assert store.add_judgments([Judgment(**judge, verdict="negative", judgment="2+2 is 4")]) == 1
    assert store.add_judgments([Judgment(**judge, verdict="positive")]) == 0
    [triple] = store.triples()
    assert (triple.verdict, triple.judgment, triple.response) == ("negative", "2+2 is 4", "5")


def test_a_write_that_fails_midway_leaves_nothing(store: Store):
    prompt = Prompt(instruction="2+2?")
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.add_prompts([prompt])
            raise RuntimeError("crash between writes")
    assert store.query("SELECT count(*) AS n FROM prompts")[0]["n"] == 0


def test_cached_judgment_finds_the_same_text_judged_in_another_run(store: Store):
    _triple(store, "2+2?", "5", "negative", "wrong sum", run="first")
    [cached] = store.cached_judgments([("2+2?", "", "5")], "rule")
    assert cached is not None and cached.judgment == "wrong sum"
    assert store.cached_judgments([("2+2?", "", "5")], "another-judge") == [None]
    found = store.cached_judgments([("2+2?", "", "4"), ("2+2?", "", "5")], "rule")
    assert found[0] is None and found[1].verdict == "negative"


def test_round_summary_adds_up_a_round(store: Store):
    store.add_run("r", config={"cut": {"lam": 1.1}})
    store.start_round("r", 0)
    for i, verdict in enumerate(["positive", "positive", "positive", "negative"]):
        answer = _triple(store, f"q{i}", "a", verdict, None if verdict == "positive" else "bad")
    store.add_judgments([Judgment(response_id=answer.response_id, judge="gpt", verdict="positive", cost_usd=0.25)])
    store.record_round_step("r", 0, "sample", 10.0)
    store.record_round_step("r", 0, "judge", 5.0)
    store.record_round_step("r", 0, "train", 20.0)
    store.record_round_step("r", 0, "eval", 4.0)
    store.add_training_steps([TrainingStep(run="r", round=0, step=s, loss=loss) for s, loss in [(0, 3.0), (1, 1.0)]])
    store.add_evaluations([Evaluation(run="r", round=0, role="candidate", suite="addition", score=0.8, n=10)])
    store.add_adapter(Adapter(adapter_id="a1", run="r", round=0, path="/adapters/a1"))
    store.set_adapter_status("a1", "live", "better on addition")
    store.finish_round("r", 0, wall_s=40.0, adapter_out="a1", gate_decision="promoted")

    [row] = store.query("SELECT * FROM round_summary")
    assert (row["responses"], row["positive"], row["negative"]) == (4, 4, 1)
    assert row["positive_share"] == pytest.approx(0.8)
    assert row["judge_cost_usd"] == pytest.approx(0.25)
    assert (row["last_loss"], row["mean_loss"], row["eval_candidate"]) == (1.0, 2.0, 0.8)
    assert row["overhead_s"] == pytest.approx(1.0) and row["overhead_share"] == pytest.approx(1 / 40)
    state = store.round_state("r", 0)
    assert state.status == "done" and state.gate_decision == "promoted" and state.train_s == 20.0
    assert [(a.adapter_id, a.status) for a in store.adapters("r")] == [("a1", "live")]


def test_flagged_tokens_join_their_response(store: Store):
    answer = _triple(store, "2+2?", "It is 5", "negative", "wrong sum")
    tokens = [FlaggedToken(run="r", round=0, response_id=answer.response_id, token_index=2, token=" 5",
                           p_aligned=0.9, p_misaligned=0.2)]
    assert store.add_flagged_tokens(tokens + tokens) == 1
    rows = store.query(
        "SELECT t.response, f.token FROM triples t JOIN flagged_tokens f USING (response_id)"
    )
    assert rows == [{"response": "It is 5", "token": " 5"}]


def test_a_negative_judgment_without_text_is_rejected():
    with pytest.raises(ValueError, match="needs its text"):
        Judgment(response_id="x", judge="rule", verdict="negative")


def test_triples_and_responses_read_back_one_round(store: Store):
    _triple(store, "2+2?", "4", "positive", round=0)
    _triple(store, "3+3?", "7", "negative", "3+3 is 6", round=1)
    assert [t.instruction for t in store.triples("r", 1)] == ["3+3?"]
    assert [r.text for r in store.responses("r", 0)] == ["4"]
    assert len(store.triples()) == 2


def test_storage_imports_no_torch_transformers_or_prefect():
    code = (
        "import sys, storage.store, storage.sql, storage.importer, storage.exporter, online_cut.cli.store; "
        "print(sorted({'torch', 'transformers', 'prefect'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_judgments_spans_are_stored_with_their_offsets_and_reach_the_triples_the_cache_and_every_export(
    store: Store, tmp_path: Path
):
    from formats.spans import Span, exact
    from formats.triple_file import read_cut_records
    from judges.cache import StoreJudgmentCache
    from judges.judgment import JudgeItem
    from storage.exporter import export_cut, export_parquet

    response = "7 + 1 = 8, 9 + 1 = 11"
    spans = [exact(response, 19, 21, "major"), Span(quote="twelve", severity="minor")]
    prompt = Prompt(instruction="Add each pair: 7 + 1, 9 + 1.")
    answer = Response(run="r", round=1, prompt_id=prompt.prompt_id, text=response)
    with store.transaction() as tx:
        tx.add_prompts([prompt])
        tx.add_responses([answer])
        tx.add_judgments([Judgment(response_id=answer.response_id, judge="rule", verdict="negative",
                                   judgment="9 + 1 = 10", spans=spans)])
    assert store.query('SELECT span_index, start, "end", text, quote FROM judgment_spans ORDER BY span_index') == [
        {"span_index": 0, "start": 19, "end": 21, "text": "11", "quote": "11"},
        {"span_index": 1, "start": None, "end": None, "text": None, "quote": "twelve"}]
    (triple,) = store.triples("r")
    assert triple.spans == spans

    (cached,) = StoreJudgmentCache(store).get_many("rule", [JudgeItem(instruction=prompt.instruction, response=response)])
    assert list(cached.spans) == spans

    assert export_cut(store, tmp_path / "cut.jsonl", jsonl=True) == 1
    (record,) = read_cut_records(tmp_path / "cut.jsonl")
    assert record.spans == spans
    (exported,) = export_parquet(store, tmp_path / "parquet")
    (record,) = read_cut_records(exported.path)
    assert record.spans == spans
