"""The whole configuration of an alignment run, read from YAML and validated before any work.

Each package owns its section (`cut.config`, `samplers.config`, ...); this module composes
them, adds the base model and evaluation sections, and turns validation failures into one
message that names the file and every bad key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cut.config import CutConfig
from judges.config import JudgeConfig
from online_cut.base_model import default_cache_dir, is_prepared, shipped_model_dir
from formats.strict_model import ExistingFile, StrictModel
from samplers.config import VLLM_LORA_RANKS, PromptsConfig, SamplerConfig
from storage.config import StorageConfig
from storage.redact import redact_url, register_secret, url_credentials


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the keys at fault."""


class ModelConfig(StrictModel):
    path: Path | None = Field(
        None, description="a local Hugging Face model folder; None: the shipped SmolLM2-135M-Instruct"
    )
    hub_id: str | None = Field(None, description="a Hugging Face hub id (machines with network access)")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="where the shipped model is converted")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights' dtype for sampling; auto: bfloat16 where supported"
    )
    max_model_len: int = Field(1024, ge=64, description="longest prompt + response the engine accepts")

    @field_validator("path")
    @classmethod
    def _path_is_model_folder(cls, path: Path | None) -> Path | None:
        if path is not None and not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a Hugging Face model folder (no config.json there)")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path is not None and self.hub_id is not None:
            raise ValueError("set at most one of `path` and `hub_id`")
        return self

    def name_or_path(self) -> str:
        """What transformers and vLLM load: the hub id, the folder, or the shipped model's cache."""
        if self.hub_id is not None:
            return self.hub_id
        if self.path is not None:
            return str(self.path)
        shipped = shipped_model_dir(self.cache_dir)
        if not is_prepared(shipped):
            raise ConfigError(
                f"model: the shipped model is not converted in {shipped}: run `make setup` or `online-cut model "
                "prepare`, or set ONLINE_CUT_CACHE (or model.cache_dir) to the cache that holds it"
            )
        return str(shipped)


class EvaluationConfig(StrictModel):
    suites: list[Literal["addition", "format", "sums", "addition-transfer", "sums-transfer"]] = Field(
        default_factory=lambda: ["addition"],
        description="held-out suites scored each round by their rule critics; a *-transfer suite asks its skill in a "
        "wording (sums: part counts) no training prompt uses, held out whole",
    )
    file: ExistingFile | None = Field(
        None, description="held-out instructions (JSON/JSONL in the CUT paper's fields, Parquet) scored by the run's judge"
    )
    n: int = Field(200, ge=1, description="held-out prompts per suite (and at most this many of the file)")
    split: Literal["heldout", "dev"] = Field(
        "heldout",
        description="the suites' prompts scored: their held-out split, or dev: `n` prompts of their training split "
        "drawn with a seed of their own ('dev'), to choose settings on without touching the held-out split (a "
        "round's training prompt is rarely among them: 1 of sums' 150 for the 48 of prompts.seed 0)",
    )
    metric: Literal["verdict", "score"] = Field(
        "verdict",
        description="what a held-out set's score is, for the gate: the share of answers judged positive (whole "
        "answers right), or the judge's mean score (rule critics: the share of parts right)",
    )
    gate: Literal["no_worse", "improve"] = Field(
        "no_worse", description="promote a candidate that is no worse than the margin, or only one that improves"
    )
    margin: float = Field(0.02, ge=0, le=1, description="allowed drop in held-out score for gate no_worse")

    @model_validator(mode="after")
    def _something_to_score(self) -> EvaluationConfig:
        if not self.suites and self.file is None:
            raise ValueError("set at least one of `suites` and `file`: the gate needs a held-out score")
        return self


class ReplayConfig(StrictModel):
    share: float = Field(
        0.0, ge=0, description="earlier rounds' triples added to a round's training set, as a share of its own count"
    )


class PlacementConfig(StrictModel):
    """Steps run as flow runs on Prefect work pools instead of in the flow's process (docs/scaling.md)."""

    judge: str | None = Field(
        None, min_length=1, description="work pool whose `online-cut-step/<pool>` deployment judges; None: in the flow's process"
    )
    train: str | None = Field(
        None, min_length=1, description="work pool whose `online-cut-step/<pool>` deployment trains; None: in the flow's process"
    )
    exchange: str | None = Field(
        None,
        min_length=1,
        description="a folder or fsspec URL that the flow and the pools' workers all reach: placed steps' inputs and outputs",
    )

    @field_validator("exchange")
    @classmethod
    def _shared_location(cls, exchange: str | None) -> str | None:
        # Each process would resolve a relative folder against its own working directory.
        if exchange is not None and "://" not in exchange and not Path(exchange).is_absolute():
            raise ValueError(f"an absolute folder or a URL, every machine's same place (got {exchange!r})")
        return exchange

    @model_validator(mode="after")
    def _exchange_for_placed_steps(self) -> PlacementConfig:
        placed = list(self.pools())
        if placed and self.exchange is None:
            raise ValueError(f"set `exchange`: {', '.join(placed)} placed on a work pool need a place to pass data")
        return self

    def pools(self) -> dict[str, str]:
        """The placed steps and their work pools."""
        return {step: pool for step, pool in (("judge", self.judge), ("train", self.train)) if pool is not None}


class Config(StrictModel):
    rounds: int = Field(2, ge=1, description="online rounds of sample → judge → train → evaluate → promote")
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    cut: CutConfig = Field(default_factory=CutConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)

    @model_validator(mode="after")
    def _batch_judging_in_the_flow(self) -> Config:
        if self.judge.mode == "batch" and self.placement.judge is not None:
            raise ValueError(
                "judge.mode batch with placement.judge: a batch is recorded in the store, which a work pool's worker "
                "never opens; judge in the flow's process (the wait costs no compute there)"
            )
        return self

    @model_validator(mode="after")
    def _people_judge_in_the_flow(self) -> Config:
        if not self.judge.by_people:
            return self
        if self.placement.judge is not None:
            raise ValueError(f"judge.kind {self.judge.kind} with placement.judge: people answer the round's own form "
                             "in the Prefect UI; leave placement.judge unset")
        if self.cut.objective == "ilf":
            raise ValueError(f"judge.kind {self.judge.kind} with cut.objective ilf: ilf has its refinements judged at "
                             "once, within the round; people cannot be asked mid-step")
        if self.judge.kind == "human" and self.evaluation.file is not None:
            raise ValueError("judge.kind human with evaluation.file: the file is scored by the run's judge every round; "
                             "use kind review (its drafter scores it) or a suite")
        return self

    @model_validator(mode="after")
    def _adapters_fit_the_lora_engine(self) -> Config:
        if self.sampler.backend in ("auto", "vllm-lora") and self.cut.lora.r > self.sampler.max_lora_rank:
            fitting = next((rank for rank in VLLM_LORA_RANKS if rank >= self.cut.lora.r), None)
            advice = (f"set sampler.max_lora_rank to {fitting}" if fitting else
                      f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}: lower cut.lora.r, or use backend vllm-merged")
            raise ValueError(
                f"cut.lora.r is {self.cut.lora.r}, above sampler.max_lora_rank {self.sampler.max_lora_rank}: vLLM's "
                f"LoRA engine (backend vllm-lora, and auto on a GPU) would refuse round 1's adapter when it is first "
                f"attached; {advice}"
            )
        return self

    @model_validator(mode="after")
    def _register_secrets(self) -> Config:
        """The key the judge will read and credentials inside URLs are scrubbed from all this process
        stores and logs (storage/redact.py), whatever the variable is called."""
        judging = self.judge.drafting()
        if judging is not None and judging.kind == "openai":
            register_secret(os.environ.get(self.judge.api_key_env))
        for _, url in self.urls():
            for credential in url_credentials(url):
                register_secret(credential)
        return self

    def urls(self) -> list[tuple[str, str]]:
        """The configured URLs that may carry credentials, by their keys."""
        urls = [("judge.base_url", self.judge.base_url), ("storage.mirror", self.storage.mirror),
                ("placement.exchange", self.placement.exchange)]
        return [(key, url) for key, url in urls if url is not None]


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("missing", "value_error") and not isinstance(error.get("input"), dict):
        return f"{key}: {message} (got {error['input']!r})"
    return f"{key}: {message}"


def parse_config(data: Any, source: str) -> Config:
    """Validate already-parsed YAML; `source` names where it came from in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  {_describe(e)}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid config\n{lines}") from None


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a config has no use for them, and a few nested ones expand to megabytes."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


def load_config(path: Path | str, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a YAML config; `overrides` are merged into its top level first."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file (give the path of a YAML config)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if overrides:
        data = {**(data or {}), **overrides}
    return parse_config(data, str(path))


def dump_config(config: Config) -> str:
    """The resolved config as YAML, defaults filled in, in the order of the schema; credentials in URLs redacted."""
    data = config.model_dump(mode="json")
    for key, url in config.urls():
        section, field = key.split(".")
        data[section][field] = redact_url(url)
    return yaml.safe_dump(data, sort_keys=False)
