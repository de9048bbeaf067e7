"""Judging through the Batch API against its stand-in: every item ends judged or failed with its
reason, a killed wait is resumed without a second submission, the answers equal online ones,
and the key lands nowhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from batch_stand_in import BatchBehaviour
from fault_server import request_stats, running_stand_in

from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.judgment import JudgeItem
from judges.openai_batch import StoreBatchLedger
from storage.store import Store

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-batch-key-6b1e9d3f7a2c"
ITEMS = [JudgeItem(instruction=f"What is {i} + 2?", response=str(i + 2), response_id=f"response-{i}") for i in range(12)]


def _config(base_url: str, tmp_path: Path, **overrides) -> JudgeConfig:
    fields = dict(kind="openai", model="stand-in", base_url=base_url, mode="batch", batch_poll_s=0.05,
                  batch_poll_max_s=0.2, batch_dir=tmp_path / "batches", max_retries=0,
                  price_input_per_1k=0.01, price_output_per_1k=0.03)
    return JudgeConfig(**(fields | overrides))


def _judge(base_url: str, tmp_path: Path, **overrides):
    store = Store(tmp_path / "store.duckdb")
    return build_judge(_config(base_url, tmp_path, **overrides), ledger=StoreBatchLedger(store)).judge_many_sync(ITEMS)


@pytest.mark.parametrize(
    "outcome, answered, reason",
    [
        ("completed", 12, "missing from the batch's output"),
        ("expired", 6, "the batch expired before answering it"),
        ("cancelled", 6, "the batch was cancelled before answering it"),
        ("failed", 0, "the batch failed"),
    ],
)
def test_without_a_retry_every_item_is_judged_or_failed_with_its_reason(tmp_path, outcome, answered, reason):
    behaviour = BatchBehaviour(seconds=0.3, outcome=outcome, error_every=5, malformed_every=4)
    with running_stand_in(0.0, batch=behaviour) as base_url:
        judgments = _judge(base_url, tmp_path, batch_retry="none")
    assert len(judgments) == len(ITEMS)
    failed = [j for j in judgments if j.status == "failed"]
    assert all(j.status == "ok" or j.error for j in judgments)
    # Of the answered lines every 5th went to the error file and every 4th was garbage.
    errors = [n for n in range(1, answered + 1) if n % 5 == 0]
    garbled = [n for n in range(1, answered + 1) if n % 4 == 0 and n % 5 != 0]
    assert sum(j.error.startswith("batch error server_error") for j in failed) == len(errors)
    # A garbled line names no request: its request counts as unanswered, like those the batch never reached.
    assert sum(j.error == reason for j in failed) == len(ITEMS) - answered + len(garbled)
    assert len(judgments) - len(failed) == answered - len(errors) - len(garbled)


@pytest.mark.parametrize("outcome", ["completed", "expired", "cancelled", "failed"])
def test_what_a_batch_left_unanswered_is_judged_by_one_more_batch(tmp_path, outcome):
    with running_stand_in(0.0, batch=BatchBehaviour(seconds=0.3, outcome=outcome, error_every=5, malformed_every=4)) as url:
        judgments = _judge(url, tmp_path)
        stats = request_stats(url)
    assert [j.status for j in judgments] == ["ok"] * len(ITEMS)
    assert stats["batch_submissions"] == 2 and stats.get("requests", 0) == 0
    batches = Store(tmp_path / "store.duckdb").query("SELECT attempt, status FROM judge_batches ORDER BY attempt")
    assert [b["attempt"] for b in batches] == [1, 2] and batches[1]["status"] == "completed"


def test_a_malformed_reply_is_asked_again_online_with_the_repair_prompt(tmp_path):
    with running_stand_in(0.0, batch=BatchBehaviour(seconds=0.3, error_every=5)) as url:
        judgments = _judge(url, tmp_path, batch_retry="online")
        stats = request_stats(url)
    assert [j.status for j in judgments] == ["ok"] * len(ITEMS)
    assert stats["batch_submissions"] == 1 and stats["requests"] == 2  # lines 5 and 10 went to the error file


def test_batch_judgments_equal_online_ones_and_cost_the_batch_price(tmp_path):
    with running_stand_in(0.0, batch=BatchBehaviour(seconds=0.3)) as url:
        batch = _judge(url, tmp_path)
        online = build_judge(_config(url, tmp_path, mode="online")).judge_many_sync(ITEMS)
    assert [(j.verdict, j.judgment, j.score) for j in batch] == [(j.verdict, j.judgment, j.score) for j in online]
    assert all(b.input_tokens == o.input_tokens and b.output_tokens == o.output_tokens for b, o in zip(batch, online))
    assert all(b.cost_usd == pytest.approx(o.cost_usd * 0.5) for b, o in zip(batch, online))


def test_a_request_file_holds_the_online_request_and_no_key(tmp_path):
    with running_stand_in(0.0, batch=BatchBehaviour(seconds=0.2), expected_key=KEY) as url:
        store = Store(tmp_path / "store.duckdb")
        config = _config(url, tmp_path)
        judge = build_judge(config, api_key=lambda: KEY, ledger=StoreBatchLedger(store))
        assert [j.status for j in judge.judge_many_sync(ITEMS)] == ["ok"] * len(ITEMS)
    [request_file] = (tmp_path / "batches").iterdir()
    lines = [json.loads(line) for line in request_file.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [item.response_id for item in ITEMS]
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert lines[0]["body"]["response_format"]["type"] == "json_schema"
    assert lines[0]["body"]["max_tokens"] == config.max_tokens
    assert KEY not in request_file.read_text()


def test_a_run_killed_while_waiting_polls_the_same_batch_when_rerun(tmp_path):
    records = tmp_path / "responses.jsonl"
    records.write_text("".join(json.dumps(i.model_dump(include={"instruction", "response"})) + "\n" for i in ITEMS))
    with running_stand_in(0.0, batch=BatchBehaviour(seconds=8.0), expected_key=KEY) as url:
        config = tmp_path / "judge.yaml"
        config.write_text(yaml.safe_dump({"judge": {"kind": "openai", "model": "stand-in", "base_url": url,
                                                    "mode": "batch", "batch_poll_s": 0.2, "batch_poll_max_s": 0.5,
                                                    "batch_dir": str(tmp_path / "batches"), "max_retries": 0}}))
        command = [sys.executable, "-m", "online_cut.cli", "judge", str(records), "--config", str(config),
                   "--db", str(tmp_path / "store.duckdb"), "--out", str(tmp_path / "out.jsonl")]
        env = os.environ | {"OPENAI_API_KEY": KEY, "OPENAI_LOG": "debug"}
        killed = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = time.monotonic() + 60
        while request_stats(url).get("batch_polls", 0) < 2:
            assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
            time.sleep(0.1)
        killed.send_signal(signal.SIGKILL)
        _, killed_err = killed.communicate()
        assert request_stats(url)["batch_submissions"] == 1

        rerun = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert request_stats(url)["batch_submissions"] == 1
    assert "recorded batches" in rerun.stderr and "not submitting again" in rerun.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["status"] for r in out] == ["ok"] * len(ITEMS)
    with duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*), max(status) FROM judge_batches").fetchone() == (1, "completed")
    written = "".join(p.read_bytes().decode(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert KEY not in written + killed_err + rerun.stdout + rerun.stderr


def test_batch_mode_needs_a_store_and_an_openai_judge(tmp_path):
    from typer.testing import CliRunner

    from online_cut.cli import app

    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"instruction": "1 + 1?", "response": "2"}) + "\n")
    config = tmp_path / "judge.yaml"
    config.write_text(yaml.safe_dump({"judge": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}))
    result = CliRunner().invoke(app, ["judge", str(records), "--config", str(config), "--out", str(tmp_path / "o.jsonl"),
                                      "--mode", "batch"])
    assert result.exit_code == 1 and "--mode batch needs --db" in result.stderr
    with pytest.raises(ValueError, match="mode batch needs kind openai"):
        JudgeConfig(kind="rule", mode="batch")


def _round_context(tmp_path: Path, tiny_model: Path, run: str, judge: dict):
    from rounds import context
    from online_cut.config import parse_config
    from storage.records import Prompt, Response

    config = parse_config({"model": {"path": str(tiny_model)}, "judge": judge,
                           "storage": {"db": str(tmp_path / f"{run}.duckdb")}}, "test")
    ctx = context.RunContext(config, run, Store.from_config(config.storage))
    ctx.store.add_run(run)
    context.start_round(ctx, 1)
    prompts = [Prompt(instruction=item.instruction) for item in ITEMS]
    with ctx.store.transaction() as tx:
        tx.add_prompts(prompts)
        tx.add_responses(Response(run=run, round=1, prompt_id=p.prompt_id, text=i.response) for p, i in zip(prompts, ITEMS))
    return ctx


def test_a_round_judged_in_batch_mode_stores_the_judgments_online_mode_stores(tmp_path, tiny_model):
    from judges.cache import StoreJudgmentCache
    from rounds import judge as judging
    from tasks.judge_setup import configured_judge

    stored = {}
    with running_stand_in(0.0, batch=BatchBehaviour(seconds=0.3, error_every=5, malformed_every=4)) as url:
        for mode in ("online", "batch"):
            judge_section = _config(url, tmp_path, mode=mode).model_dump(mode="json")
            ctx = _round_context(tmp_path, tiny_model, mode, judge_section)
            judge = configured_judge(ctx.config.judge, cache=StoreJudgmentCache(ctx.store),
                                     ledger=StoreBatchLedger(ctx.store))
            seen = []
            judging.judge(ctx, judge, 1, progress=lambda done, total: seen.append((done, total)))
            assert seen[-1] == (len(ITEMS), len(ITEMS))
            stored[mode] = ctx.store.query(
                "SELECT p.instruction, t.verdict, t.judgment, t.score FROM triples t JOIN prompts p USING (instruction) "
                "ORDER BY p.instruction")
        assert request_stats(url)["batch_submissions"] == 2  # the batch and its one retry
    assert stored["batch"] == stored["online"] and len(stored["batch"]) == len(ITEMS)


def test_batch_judging_placed_on_a_work_pool_is_refused():
    from online_cut.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="judge.mode batch with placement.judge"):
        parse_config({"judge": {"kind": "openai", "mode": "batch"},
                      "placement": {"judge": "cpu", "exchange": "/shared/exchange"}}, "test")
