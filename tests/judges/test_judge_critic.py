"""The shipped model as critic, for real: behind vLLM's own OpenAI-compatible server, and in
an in-process vLLM engine. The 135M critic may fail an item (its reply is then recorded as
failed with the reason), but every item gets a result and its token usage is recorded."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from judges.cache import StoreJudgmentCache
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.judgment import JudgeItem
from storage.store import Store

pytestmark = pytest.mark.integration

ITEMS = [
    JudgeItem(instruction="What is 47 + 38?", response="75"),
    JudgeItem(instruction="What is 12 + 30?", response="42"),
    JudgeItem(instruction="Name the capital of France.", response="The capital of France is Paris."),
    JudgeItem(instruction="Name the capital of France.", response="Berlin."),
]
# What keeps a 135M critic from looping inside the judgment string until max_tokens.
CRITIC_SETTINGS = dict(judgment_max_chars=300, max_tokens=200, frequency_penalty=0.5, temperature=0.0)


@pytest.fixture(scope="module")
def critic_server(shipped_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's OpenAI-compatible server serving the shipped model as `critic`, stopped after
    this module so it holds no memory while other tests run.

    The KV cache is sized in bytes: `--gpu-memory-utilization 0.05` is a share of RAM from
    which vLLM's CPU worker subtracts its own footprint, and that went negative here."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path_factory.mktemp("critic-server") / "server.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(shipped_model),
        "--served-model-name", "critic", "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "2048", "--kv-cache-memory-bytes", str(256 * 2**20), "--enforce-eager",
    ]
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the vLLM server did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_vllm_server_as_critic_judges_every_item_with_usage_stored(critic_server: str, tmp_path: Path) -> None:
    config = JudgeConfig(kind="openai", model="critic", base_url=critic_server, concurrency=4, timeout_s=120, **CRITIC_SETTINGS)
    store = Store(tmp_path / "store.duckdb")
    judgments = build_judge(config, cache=StoreJudgmentCache(store)).judge_many_sync(ITEMS)

    assert len(judgments) == len(ITEMS)
    assert all(j.status == "ok" or j.error for j in judgments)
    assert all(j.input_tokens > 0 and j.output_tokens > 0 for j in judgments)
    assert any(j.status == "ok" for j in judgments), [j.error for j in judgments]
    stored = store.query("SELECT usage FROM judgments")
    assert len(stored) == len(ITEMS) and all(row["usage"]["input_tokens"] > 0 for row in stored)


def test_in_process_critic_uses_the_same_prompt_and_parser(shipped_model: Path) -> None:
    critic = build_judge(JudgeConfig(kind="local", critic_path=shipped_model, **CRITIC_SETTINGS))
    try:
        judgments = critic.judge_many_sync(ITEMS)
    finally:
        critic.close()

    assert len(judgments) == len(ITEMS)
    assert all(j.status == "ok" or j.error for j in judgments)
    assert all(j.input_tokens > 0 and j.output_tokens > 0 for j in judgments)
    assert any(j.status == "ok" for j in judgments), [j.error for j in judgments]
