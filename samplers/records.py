"""What goes into a sampler and what comes out: prompts, sampling settings, samples."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from samplers.config import SamplerConfig
from formats import keys


@dataclass(frozen=True)
class Prompt:
    """One instruction to answer; `metadata` carries what a checker needs (reference answer, constraint)."""

    instruction: str
    input: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def prompt_id(self) -> str:
        """The store's id of this prompt: the same instruction and input give the same id everywhere."""
        return keys.prompt_id(self.instruction, self.input)

    def user_message(self) -> str:
        """The user turn the chat template wraps: the CUT paper's `instruction + "\\n" + input`, the
        same prompt the trainer builds from a triple (`cut.data.Triple.prompt`)."""
        return f"{self.instruction}\n{self.input}" if self.input else self.instruction

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.user_message()}]


@dataclass(frozen=True)
class SamplingSettings:
    """How each prompt is sampled; stored beside every sample."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 64
    stop: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: SamplerConfig) -> SamplingSettings:
        return cls(config.n, config.temperature, config.top_p, config.max_tokens, tuple(config.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Sample:
    """One sampled response. `adapter` is the name the caller attached (None: the base model)."""

    prompt_id: str
    sample_index: int
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None
    params: dict[str, Any]
    # Log-probs of the generated tokens; only filled for the adapter probe.
    token_logprobs: tuple[float, ...] | None = None

    def as_record(self) -> dict[str, Any]:
        """The fields a store or a JSONL file keeps (the probe-only log-probs left out)."""
        record = asdict(self)
        del record["token_logprobs"]
        return record
