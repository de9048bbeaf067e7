"""The configured judge with its API key read where the config says: the environment variable
`judge.api_key_env`, or the Prefect Secret block `judge.api_key_secret` (read when judging starts);
a local critic defaults to the shipped model."""

from __future__ import annotations

from judges.base import Judge
from judges.cache import JudgmentCache
from judges.config import JudgeConfig
from judges.factory import build_judge
from judges.openai_batch import BatchLedger


def configured_judge(config: JudgeConfig, cache: JudgmentCache | None = None,
                     ledger: BatchLedger | None = None) -> Judge | None:
    """The AI judge that judges at once (the drafter under `kind: review`); None where people alone judge."""
    config = config.drafting()
    if config is None:
        return None
    api_key = _prefect_secret_reader(config.api_key_secret) if config.api_key_secret else None
    critic_path = None
    if config.kind == "local" and config.critic_path is None:
        from online_cut.base_model import shipped_model_dir

        critic_path = shipped_model_dir()
    return build_judge(config, api_key=api_key, cache=cache, ledger=ledger, critic_path=critic_path)


def _prefect_secret_reader(block_name: str):
    def read() -> str:
        from prefect.blocks.system import Secret

        return Secret.load(block_name).get()

    return read
