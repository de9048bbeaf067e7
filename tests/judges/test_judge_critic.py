"""The shipped model as critic, for real: behind vLLM's own OpenAI-compatible server, and in
an in-process vLLM engine (both the session's, tests/conftest.py). The 135M critic may fail an
item (its reply is then recorded as failed with the reason), but every item gets a result and
its token usage is recorded."""

from __future__ import annotations

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
