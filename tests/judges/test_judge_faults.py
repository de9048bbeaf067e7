"""The OpenAI-compatible judge against a stand-in server that injects faults: nothing is lost,
nothing is judged twice, the budget stops cleanly, and the key goes nowhere but the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fault_server import ALWAYS_NOT_JSON, request_stats, running_stand_in
from typer.testing import CliRunner

from judges.cache import StoreJudgmentCache
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.judgment import JudgeItem
from online_cut.cli import app
from storage.store import Store

REPO = Path(__file__).resolve().parents[2]
FAKE_KEY = "sk-fake-judge-key-7f3a9c2e5b1d"


def _items(n: int, tag: str = "") -> list[JudgeItem]:
    return [JudgeItem(instruction=f"What is {10 + i} + {20 + i}?{tag}", response=str(30 + i + i % 3)) for i in range(n)]


def _config(base_url: str, **overrides) -> JudgeConfig:
    # Short timeouts: a 'hang' fault sleeps 1.5 s, past the 0.5 s per-request timeout.
    fields = dict(kind="openai", model="stand-in", base_url=base_url, timeout_s=0.5, max_retries=4, concurrency=8)
    return JudgeConfig(**(fields | overrides))


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[str]:
    with running_stand_in(fault_rate=0.3, hang_s=1.5) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def clean_server() -> Iterator[str]:
    with running_stand_in(fault_rate=0.0) as base_url:
        yield base_url


def test_thirty_percent_faults_lose_nothing_and_a_rerun_sends_no_request(faulty_server: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "store.duckdb")
    items = _items(100)
    first = build_judge(_config(faulty_server), cache=StoreJudgmentCache(store)).judge_many_sync(items)

    stats = request_stats(faulty_server)
    assert all(stats.get(fault, 0) > 0 for fault in ("429", "500", "hang", "not-json", "garbage")), stats
    assert len(first) == len(items)
    assert [j.status for j in first] == ["ok"] * len(items), Counter(j.error for j in first)
    assert stats["ok"] == len(items), "each item got exactly one valid answer: none judged twice"
    assert all(j.input_tokens > 0 and j.output_tokens > 0 for j in first)

    # A new judge (a new process, in effect) over the same store: everything comes from the cache.
    second = build_judge(_config(faulty_server), cache=StoreJudgmentCache(store)).judge_many_sync(items)
    assert request_stats(faulty_server)["requests"] == stats["requests"]
    assert all(j.cached for j in second)
    assert [(j.verdict, j.judgment) for j in second] == [(j.verdict, j.judgment) for j in first]
    stored = store.query("SELECT count(*) AS n, count(usage) AS with_usage FROM judgments")
    assert stored == [{"n": 100, "with_usage": 100}]


def test_a_reply_that_stays_malformed_after_repair_fails_with_its_reason(faulty_server: str) -> None:
    before = request_stats(faulty_server)["requests"]
    [judgment] = build_judge(_config(faulty_server)).judge_many_sync(_items(1, tag=ALWAYS_NOT_JSON))
    assert judgment.status == "failed"
    assert judgment.error == "malformed reply after one repair: the reply is not a JSON object"
    assert judgment.raw == "I think this response is quite good overall!"
    assert request_stats(faulty_server)["requests"] - before == 2, "one request and one repair"


def test_budget_stops_judging_and_marks_the_rest_failed(clean_server: str) -> None:
    items = _items(20, tag=" (budget)")
    before = request_stats(clean_server)["requests"]
    judgments = build_judge(_config(clean_server, max_requests=5)).judge_many_sync(items)
    assert request_stats(clean_server)["requests"] - before == 5
    assert Counter(j.status for j in judgments) == {"ok": 5, "failed": 15}
    assert {j.error for j in judgments if j.status == "failed"} == {"budget exhausted"}


def test_cost_is_estimated_from_configured_prices(clean_server: str) -> None:
    config = _config(clean_server, price_input_per_1k=1.0, price_output_per_1k=2.0)
    [judgment] = build_judge(config).judge_many_sync(_items(1, tag=" (priced)"))
    assert judgment.cost_usd == pytest.approx((judgment.input_tokens * 1.0 + judgment.output_tokens * 2.0) / 1000)


def _write_judge_config(path: Path, base_url: str) -> Path:
    judge = _config(base_url).model_dump(mode="json", include={"kind", "model", "base_url", "timeout_s", "max_retries"})
    path.write_text(yaml.safe_dump({"judge": judge}))
    return path


def test_the_key_reaches_the_server_and_nothing_else(tmp_path: Path) -> None:
    """The CLI end to end with the key in the environment and the SDK logging at debug level."""
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(i.model_dump(include={"instruction", "response"})) + "\n" for i in _items(30)))
    with running_stand_in(fault_rate=0.3, hang_s=1.5, expected_key=FAKE_KEY) as base_url:
        config = _write_judge_config(tmp_path / "judge.yaml", base_url)
        command = [sys.executable, "-m", "online_cut.cli", "judge", str(tmp_path / "in.jsonl"), "--config", str(config),
                   "--db", str(tmp_path / "store.duckdb"), "--out", str(tmp_path / "out.jsonl")]
        env = os.environ | {"OPENAI_API_KEY": FAKE_KEY, "OPENAI_LOG": "debug"}
        run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert run.returncode == 0, run.stderr
        stats = request_stats(base_url)
        assert stats.get("unauthorized", 0) == 0 and stats["ok"] == 30, "the key was sent with every request"
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert request_stats(base_url)["requests"] == stats["requests"], "the rerun is answered from --db"

    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 30 and all(r["status"] == "ok" and r["verdict"] in ("positive", "negative") for r in out)
    assert "HTTP Request" in run.stderr or "Sending HTTP Request" in run.stderr, "debug logging was on"
    texts = {"stdout": run.stdout + rerun.stdout, "stderr": run.stderr + rerun.stderr}
    texts |= {path.name: path.read_bytes().decode(errors="replace") for path in tmp_path.iterdir() if path.is_file()}
    assert "store.duckdb" in texts
    assert [name for name, text in texts.items() if FAKE_KEY in text] == []


def test_a_bad_input_line_names_file_and_line_and_writes_nothing(tmp_path: Path, clean_server: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "What is 1 + 2?", "response": "3"}\n{"instruction": "What is 2 + 2?"}\n')
    config = _write_judge_config(tmp_path / "judge.yaml", clean_server)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["judge", str(source), "--config", str(config), "--out", str(out)])
    assert result.exit_code != 0
    assert f"{source}: record 2 (line 2): 'response': Field required" in result.output
    assert not out.exists()


def test_rule_judge_annotates_a_file_through_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 7, "instruction": "What is 47 + 38?", "response": "75"}\n')
    config = tmp_path / "rule.yaml"
    config.write_text("judge:\n  kind: rule\n  rule: addition\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["judge", str(source), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == {
        "id": 7, "instruction": "What is 47 + 38?", "response": "75",
        "judgment": 'The response "75" is incorrect: 47 + 38 = 85, not 75.', "verdict": "negative", "status": "ok", "error": None,
        "spans": [{"quote": "75", "start": 0, "end": 2, "text": "75", "severity": "major"}],
    }


def test_a_killed_judge_loses_at_most_the_requests_in_flight(tmp_path: Path) -> None:
    """Each judgment is in the store as soon as it is made: after a SIGKILL mid-run, the rerun sends
    only what is not stored, and of the answered items at most `concurrency` go again."""
    items, concurrency = _items(120, tag=" (killed)"), 4
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(i.model_dump(include={"instruction", "response"})) + "\n" for i in items))
    db = tmp_path / "store.duckdb"
    with running_stand_in(fault_rate=0.0, latency_s=0.1) as base_url:
        judge = _config(base_url, concurrency=concurrency).model_dump(
            mode="json", include={"kind", "model", "base_url", "timeout_s", "max_retries", "concurrency"})
        (tmp_path / "judge.yaml").write_text(yaml.safe_dump({"judge": judge}))
        command = [sys.executable, "-m", "online_cut.cli", "judge", str(tmp_path / "in.jsonl"), "--config",
                   str(tmp_path / "judge.yaml"), "--db", str(db), "--out", str(tmp_path / "out.jsonl")]
        first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while request_stats(base_url).get("ok", 0) < 40 and time.monotonic() < deadline and first.poll() is None:
                time.sleep(0.02)
        finally:
            first.kill()
            first.wait()
        answered = request_stats(base_url)["ok"]
        stored = Store(db).query("SELECT count(*) AS n FROM judgments")[0]["n"]
        assert 40 <= answered < len(items), "the kill landed mid-run"
        assert answered - concurrency <= stored <= answered

        rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert request_stats(base_url)["ok"] - answered == len(items) - stored, "no stored item was judged again"
    assert Store(db).query("SELECT count(*) AS n, count(DISTINCT response_id) AS distinct_ids FROM judgments") == [
        {"n": len(items), "distinct_ids": len(items)}]


def test_the_cut_papers_files_are_judged_as_they_are_with_output_read_as_the_response(tmp_path: Path) -> None:
    source = tmp_path / "iter.json"
    source.write_text(json.dumps([{"id": 1, "instruction": "What is 47 + 38?", "input": "", "output": "75",
                                   "judgment": None}]))
    config = tmp_path / "rule.yaml"
    config.write_text("judge:\n  kind: rule\n  rule: addition\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["judge", str(source), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["verdict"] == "negative"
