"""Which judge annotates responses, and how hard it may be pushed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from judges.prompt import DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE, check_template
from formats.strict_model import StrictModel


# Short: the Prefect UI shows the first few lines of a form's description only.
DEFAULT_GUIDELINES = (
    "**Positive**: acceptable as it is. **Negative**: say what is wrong, as you would tell the writer, and copy "
    "the wrong parts of the response into *wrong parts*, one per line. The score is optional."
)


class PeopleConfig(StrictModel):
    """How people judge (`kind: human | review`): in the Prefect UI, a form per page of responses."""

    page_size: int = Field(5, ge=1, le=50, description="responses per form")
    guidelines: str = Field(DEFAULT_GUIDELINES, min_length=1, description="markdown shown above every form")
    timeout_s: float = Field(
        86400.0, ge=1, description="how long a round waits for each form; then the run stops and a rerun asks again",
    )
    poll_s: float = Field(10.0, gt=0, description="how often the waiting round asks the Prefect server for an answer")


class JudgeConfig(StrictModel):
    kind: Literal["rule", "openai", "local", "human", "review"] = Field(
        "rule", description="rule: checkable tasks; openai: any OpenAI-compatible server; local: a local critic; "
        "human: people judge in the Prefect UI; review: the `drafter` judge drafts, people accept or correct"
    )
    drafter: Literal["rule", "openai", "local"] = Field(
        "rule", description="kind review: the AI judge whose drafts people review (its settings are this section's)",
    )
    people: PeopleConfig = Field(default_factory=PeopleConfig)
    rule: Literal["addition", "format", "sums"] = Field("addition", description="the rule critic for kind 'rule'")
    model: str = Field("gpt-4o", description="model name sent to the OpenAI-compatible server")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; None is api.openai.com")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable that holds the key (never the key)")
    api_key_secret: str | None = Field(
        None, description="name of a Prefect Secret block holding the key; read only when judging"
    )
    mode: Literal["online", "batch"] = Field(
        "online",
        description="kind openai: online requests, or the Batch API (half the price, a separate rate limit; "
        "waits minutes to hours)",
    )
    completion_window: str = Field("24h", description="mode batch: the batch's completion window")
    batch_discount: float = Field(0.5, gt=0, le=1, description="mode batch: the share of price_*_per_1k a batch pays")
    batch_poll_s: float = Field(10.0, gt=0, description="mode batch: first wait between polls; grows 1.5x per poll")
    batch_poll_max_s: float = Field(300.0, gt=0, description="mode batch: longest wait between polls")
    batch_retry: Literal["batch", "online", "none"] = Field(
        "batch",
        description="mode batch: where items a batch did not answer (errors, malformed replies, expired or "
        "cancelled batches) get their one more try",
    )
    batch_dir: Path = Field(
        Path(".online-cut/batches"), description="mode batch: where each batch's request file (prompts only) is kept"
    )
    concurrency: int = Field(16, ge=1, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(5, ge=0, description="retries on 429, 5xx and timeouts")
    max_requests: int | None = Field(None, ge=1, description="run-level budget of requests (None: unbounded)")
    max_total_tokens: int | None = Field(
        None, ge=1, description="run-level budget of input + output tokens (None: unbounded)"
    )
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="the judge's system message")
    user_template: str = Field(
        DEFAULT_USER_TEMPLATE,
        description="the judge's user message; $instruction, $input, $input_section, $response are filled in",
    )
    structured_output: bool = Field(
        True, description="ask for the reply's JSON schema (response_format json_schema) where the server supports it"
    )
    judgment_max_chars: int | None = Field(
        None, ge=16, description="maxLength of the judgment in the JSON schema; stops a small critic from looping"
    )
    max_tokens: int = Field(512, ge=16, description="longest reply the judge may write")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of model judges")
    frequency_penalty: float = Field(
        0.0, ge=-2, le=2, description="OpenAI frequency penalty; a small critic needs some against loops"
    )
    price_input_per_1k: float | None = Field(None, ge=0, description="USD per 1k input tokens, for cost estimates")
    price_output_per_1k: float | None = Field(None, ge=0, description="USD per 1k output tokens, for cost estimates")
    critic_path: Path | None = Field(
        None, description="kind local: the critic's Hugging Face folder; None: the shipped model"
    )
    critic_kv_cache_mib: int = Field(256, ge=16, description="kind local: the critic engine's KV cache, in MiB")

    @property
    def by_people(self) -> bool:
        """People give the judgments the round trains on (kinds human and review)."""
        return self.kind in ("human", "review")

    def drafting(self) -> JudgeConfig | None:
        """The AI judge that judges at once: this config, the drafter's under review, None for people alone."""
        if self.kind == "human":
            return None
        return self.model_copy(update={"kind": self.drafter}) if self.kind == "review" else self

    @model_validator(mode="after")
    def _batch_needs_openai(self) -> JudgeConfig:
        judging = self.drafting()
        if self.mode == "batch" and (judging is None or judging.kind != "openai"):
            raise ValueError(f"mode batch needs kind openai, or review with drafter openai (the Batch API); kind is "
                             f"{self.kind!r}" + (f", drafter {self.drafter!r}" if self.kind == "review" else ""))
        return self

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, name: str) -> str:
        # A value_error's message never repeats the input: a key pasted here is not echoed.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError("must be the name of an environment variable (letters, digits and _), not the key itself")
        return name

    @field_validator("user_template")
    @classmethod
    def _template_placeholders(cls, template: str) -> str:
        return check_template(template)
