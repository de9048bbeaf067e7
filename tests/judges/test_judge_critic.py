"""The shipped model as critic, for real: behind vLLM's own OpenAI-compatible server, and in
an in-process vLLM engine (both the session's, tests/conftest.py). The 135M critic may fail an
item (its reply is then recorded as failed with the reason), but every item gets a result and
its token usage is recorded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from judges.cache import StoreJudgmentCache
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.judgment import JudgeItem
from judges.local_critic import LocalCritic
from storage.store import Store
from vllm_server import SERVED_NAME

pytestmark = pytest.mark.integration

ITEMS = [
    JudgeItem(instruction="What is 47 + 38?", response="75"),
    JudgeItem(instruction="What is 12 + 30?", response="42"),
    JudgeItem(instruction="Name the capital of France.", response="The capital of France is Paris."),
    JudgeItem(instruction="Name the capital of France.", response="Berlin."),
]
# A response longer than the session engine's context (1024 tokens) and the server's (2048): no critic can take it.
TOO_LONG = JudgeItem(instruction="Repeat the word.", response="word " * 3000)
# What keeps a 135M critic from looping inside the judgment string until max_tokens.
CRITIC_SETTINGS = dict(judgment_max_chars=300, max_tokens=200, frequency_penalty=0.5, temperature=0.0)


def test_vllm_server_as_critic_judges_every_item_with_usage_stored(shipped_vllm_server: str, tmp_path: Path) -> None:
    config = JudgeConfig(kind="openai", model=SERVED_NAME, base_url=shipped_vllm_server, concurrency=4, timeout_s=120,
                         **CRITIC_SETTINGS)
    store = Store(tmp_path / "store.duckdb")
    judgments = build_judge(config, cache=StoreJudgmentCache(store)).judge_many_sync(ITEMS)

    assert len(judgments) == len(ITEMS)
    assert all(j.status == "ok" or j.error for j in judgments)
    assert all(j.input_tokens > 0 and j.output_tokens > 0 for j in judgments)
    assert any(j.status == "ok" for j in judgments), [j.error for j in judgments]
    stored = store.query("SELECT usage FROM judgments")
    assert len(stored) == len(ITEMS) and all(row["usage"]["input_tokens"] > 0 for row in stored)


def test_in_process_critic_uses_the_same_prompt_and_parser(shipped_model: Path, shipped_merged_engine) -> None:
    sampler = shipped_merged_engine.sampler
    sampler.attach(None)  # the shipped model's own weights
    config = JudgeConfig(kind="local", critic_path=shipped_model, **CRITIC_SETTINGS)
    built = build_judge(config)
    assert isinstance(built, LocalCritic) and built.critic_path == str(shipped_model)
    # The session's engine rather than one of its own (a minute to start); closing the critic would stop it.
    critic = LocalCritic(config, built.critic_path, built.judge_id, llm=sampler._engine())
    judgments = critic.judge_many_sync(ITEMS)

    assert len(judgments) == len(ITEMS)
    assert all(j.status == "ok" or j.error for j in judgments)
    assert all(j.input_tokens > 0 and j.output_tokens > 0 for j in judgments)
    assert any(j.status == "ok" for j in judgments), [j.error for j in judgments]


def test_an_item_too_long_for_the_critic_fails_alone_and_the_rest_of_the_batch_is_judged(
    shipped_model: Path, shipped_merged_engine, tmp_path: Path
) -> None:
    """Issue 37: one item over the critic's context raised from vLLM and lost every judgment of the batch."""
    sampler = shipped_merged_engine.sampler
    sampler.attach(None)
    config = JudgeConfig(kind="local", critic_path=shipped_model, **CRITIC_SETTINGS)
    store = Store(tmp_path / "store.duckdb")
    critic = LocalCritic(config, str(shipped_model), "local:critic", cache=StoreJudgmentCache(store),
                         llm=sampler._engine())
    judgments = critic.judge_many_sync([ITEMS[0], TOO_LONG, ITEMS[2]])

    assert judgments[1].status == "failed"
    assert re.fullmatch(r"too long for the critic's context: the prompt is (\d+) tokens, the critic's context holds "
                        r"1024 \(prompt and reply together\)", judgments[1].error)
    assert int(re.search(r"is (\d+) tokens", judgments[1].error).group(1)) > 1500
    assert all(j.output_tokens > 0 and "too long" not in (j.error or "") for j in (judgments[0], judgments[2]))
    assert store.query("SELECT count(*) AS n FROM judgments") == [{"n": 3}]


def test_a_server_that_refuses_an_item_as_too_long_fails_that_item_alone(shipped_vllm_server: str) -> None:
    config = JudgeConfig(kind="openai", model=SERVED_NAME, base_url=shipped_vllm_server, concurrency=4, timeout_s=120,
                         **CRITIC_SETTINGS)
    judgments = build_judge(config).judge_many_sync([ITEMS[0], TOO_LONG, ITEMS[2]])
    assert judgments[1].status == "failed" and judgments[1].error.startswith("HTTP 400")
    assert "maximum" in judgments[1].error or "context" in judgments[1].error, judgments[1].error
    assert all(j.output_tokens > 0 for j in (judgments[0], judgments[2]))
