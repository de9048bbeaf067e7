"""A key is scrubbed wherever it comes from — a variable of any name, a Prefect Secret block, a
URL's user info — before it reaches the store, exports, logs, output files or `config check`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fault_server import running_stand_in
from typer.testing import CliRunner

from judges.judgment import JudgeItem
from online_cut.cli import app
from online_cut.config import Config, load_config
from tasks.judge_setup import configured_judge
from judges.config import JudgeConfig
from storage.records import Judgment, Prompt, Response
from storage.redact import redact_payload
from storage.store import Store

REPO = Path(__file__).resolve().parents[2]
AZURE_KEY = "azure-key-3c9e1f7a2b6d"
BLOCK_KEY = "block-key-8d2f6a1c9e4b"
URL_PASSWORD = "url-pass-5e7b3d9f1a2c"


def _stored_bytes(store_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in store_dir.rglob("*") if p.is_file())


def test_a_key_under_any_variable_name_is_in_no_output_file_store_or_log(tmp_path: Path) -> None:
    items = [{"instruction": f"What is {i} + 1?", "response": str(i + 1)} for i in range(4)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    with running_stand_in(fault_rate=0.0, expected_key="the-right-key-000") as base_url:
        config = tmp_path / "judge.yaml"
        config.write_text(yaml.safe_dump({"judge": {"kind": "openai", "model": "stand-in", "base_url": base_url,
                                                    "api_key_env": "AZURE_OPENAI_KEY", "max_retries": 0}}))
        command = [sys.executable, "-m", "online_cut.cli", "judge", str(tmp_path / "in.jsonl"), "--config", str(config),
                   "--db", str(tmp_path / "store.duckdb"), "--out", str(tmp_path / "out.jsonl")]
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {"AZURE_OPENAI_KEY": AZURE_KEY,
                                                                              "OPENAI_LOG": "debug"}
        run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 3, run.stderr  # every record written, each failed with its reason
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(r["status"] == "failed" and "Incorrect API key provided: [redacted]" in r["error"] for r in out)
    assert AZURE_KEY not in run.stdout + run.stderr
    assert AZURE_KEY.encode() not in _stored_bytes(tmp_path)


def test_a_key_from_a_secret_block_is_scrubbed_from_judgments_the_store_and_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.blocks.system import Secret

    class Block:
        def get(self) -> str:
            return BLOCK_KEY

    monkeypatch.setattr(Secret, "load", classmethod(lambda cls, name: Block()))
    with running_stand_in(fault_rate=0.0, expected_key="the-right-key-000") as base_url:
        config = JudgeConfig(kind="openai", model="stand-in", base_url=base_url, api_key_secret="judge-key", max_retries=0)
        judgments = configured_judge(config).judge_many_sync([JudgeItem(instruction="What is 1 + 1?", response="2")])
    assert judgments[0].status == "failed" and BLOCK_KEY not in judgments[0].error
    prompt = Prompt(instruction="What is 1 + 1?")
    response = Response(run="r", round=1, prompt_id=prompt.prompt_id, text=f"echo {BLOCK_KEY}")
    store = Store(tmp_path / "store.duckdb")
    with store.transaction() as tx:
        tx.add_prompts([prompt])
        tx.add_responses([response])
        tx.add_judgments([Judgment(response_id=response.response_id, judge="j", verdict="negative",
                                   judgment=f"it repeats {BLOCK_KEY}", raw_reply=f"server said {BLOCK_KEY}")])
    assert CliRunner().invoke(app, ["export", "--db", str(store.path), "--format", "parquet",
                                    "--out", str(tmp_path / "exports")]).exit_code == 0
    assert BLOCK_KEY.encode() not in _stored_bytes(tmp_path)
    with caplog.at_level(logging.INFO):
        logging.getLogger("online_cut.test").info("the key is %s", BLOCK_KEY)
    assert BLOCK_KEY not in caplog.text and "the key is [redacted]" in caplog.text


def test_credentials_in_a_url_are_in_neither_config_check_nor_the_stored_run_config(tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    base_url = f"http://judge:{URL_PASSWORD}@127.0.0.1:9/v1?api-key=q-{URL_PASSWORD}"
    config_file.write_text(yaml.safe_dump({"judge": {"kind": "openai", "base_url": base_url},
                                           "storage": {"mirror": f"s3://bucket/prefix?secret={URL_PASSWORD}"}}))
    checked = CliRunner().invoke(app, ["config", "check", str(config_file)])
    assert checked.exit_code == 0, checked.output
    assert URL_PASSWORD not in checked.output
    assert "http://[redacted]@127.0.0.1:9/v1?api-key=[redacted]" in checked.output

    settings = load_config(config_file)
    store = Store(tmp_path / "store" / "store.duckdb")
    store.add_run("r", config=settings.model_dump(mode="json"))
    assert URL_PASSWORD.encode() not in _stored_bytes(tmp_path / "store")
    stored = store.query("SELECT config FROM runs")[0]["config"]
    assert stored["judge"]["base_url"].startswith("http://[redacted]@127.0.0.1:9/v1")


def test_a_pasted_key_as_api_key_env_is_refused_without_being_echoed(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump({"judge": {"kind": "openai", "api_key_env": "sk-proj-9f8e7d6c5b4a"}}))
    result = CliRunner().invoke(app, ["config", "check", str(config_file)])
    assert result.exit_code == 1
    assert "judge.api_key_env: must be the name of an environment variable" in result.stderr
    assert "9f8e7d6c5b4a" not in result.output + result.stderr


def test_the_stored_run_config_keeps_the_names_of_the_keys_variable_and_block_and_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 37: the name of the variable was stored as "[redacted]", so `adapters verify` without
    --config could not read the run's config back. A name is not a secret; the key still never lands."""
    key = "sk-proj-stored-config-4242"
    monkeypatch.setenv("TEAM_JUDGE_KEY", key)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({"judge": {"kind": "openai", "api_key_env": "TEAM_JUDGE_KEY",
                                                     "api_key_secret": "judge-key"}}))
    store = Store(tmp_path / "store" / "store.duckdb")
    store.add_run("r", config=load_config(config_file).model_dump(mode="json"))
    stored = store.query("SELECT config FROM runs")[0]["config"]
    assert (stored["judge"]["api_key_env"], stored["judge"]["api_key_secret"]) == ("TEAM_JUDGE_KEY", "judge-key")
    assert Config.model_validate(stored).judge.api_key_env == "TEAM_JUDGE_KEY"
    assert key.encode() not in _stored_bytes(tmp_path / "store")
    assert redact_payload({"client_secret": "a-real-secret-value", "api_key": "x" * 12}, []) == {
        "client_secret": "[redacted]", "api_key": "[redacted]"}
