"""Build the configured judge: `build_judge(config.judge, api_key=..., cache=...)`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from judges.base import Judge
from judges.cache import JudgmentCache
from judges.config import JudgeConfig
from judges.local_critic import LocalCritic
from judges.openai_batch import BatchLedger, OpenAIBatchJudge
from judges.openai_judge import KeyProvider, OpenAIJudge
from judges.rules import AdditionCritic, FormatCritic, SumsCritic

# Everything in the config that can change a model judge's answer; never the key or limits.
_ANSWER_SHAPING_FIELDS = (
    "system_prompt",
    "user_template",
    "structured_output",
    "judgment_max_chars",
    "max_tokens",
    "temperature",
    "frequency_penalty",
)


def config_fingerprint(config: JudgeConfig, model: str) -> str:
    """A short stable hash of what the judge answers with; part of the judge's id, and so of
    the cache key: change the prompt or the model and nothing cached is reused."""
    fields = {name: getattr(config, name) for name in _ANSWER_SHAPING_FIELDS}
    fields.update(kind=config.kind, model=model, base_url=config.base_url if config.kind == "openai" else None)
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def env_key_provider(variable: str) -> KeyProvider:
    """Reads the key from the environment when judging starts."""
    return lambda: os.environ.get(variable) or None


def build_judge(
    config: JudgeConfig,
    *,
    api_key: KeyProvider | None = None,
    cache: JudgmentCache | None = None,
    ledger: BatchLedger | None = None,
    critic_path: Path | None = None,
) -> Judge:
    """The judge the config selects.

    `api_key` supplies the key for kind 'openai' (default: the environment variable
    `config.api_key_env`); a config naming a Prefect Secret block (`api_key_secret`) needs the
    caller to pass a provider reading it, since nothing under judges/ imports Prefect.
    Mode 'batch' records its batches in `ledger`, so a rerun polls them instead of paying again.
    Rule critics are instant and free, so they take no cache. A local critic's model is
    `config.critic_path`, else `critic_path` (the application passes its shipped model).
    """
    if config.kind == "rule":
        return {"addition": AdditionCritic, "format": FormatCritic, "sums": SumsCritic}[config.rule]()
    if config.kind == "openai":
        if api_key is None:
            if config.api_key_secret is not None:
                raise ValueError(
                    f"judge.api_key_secret names the Prefect Secret {config.api_key_secret!r}: "
                    "pass a key provider that reads it"
                )
            api_key = env_key_provider(config.api_key_env)
        judge_id = f"openai:{config.model}@{config_fingerprint(config, config.model)}"
        if config.mode == "batch":
            if ledger is None:
                raise ValueError("judge.mode batch needs a store to record its batches in (online-cut judge: --db)")
            return OpenAIBatchJudge(config, api_key, judge_id, ledger, cache)
        return OpenAIJudge(config, api_key, judge_id, cache)
    model = config.critic_path if config.critic_path is not None else critic_path
    if model is None:
        raise ValueError("judge.kind local: set judge.critic_path to the critic's model folder")
    model = str(model)
    judge_id = f"local:{Path(model).name}@{config_fingerprint(config, model)}"
    return LocalCritic(config, model, judge_id, cache=cache)
