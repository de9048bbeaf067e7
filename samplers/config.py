"""How responses are sampled, and which instructions each round samples for."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from formats.strict_model import ExistingFile, StrictModel


class SamplerConfig(StrictModel):
    backend: Literal["auto", "vllm-lora", "vllm-merged", "vllm-server", "transformers"] = Field(
        "auto", description="auto picks the fastest correct way for the device"
    )
    n: int = Field(4, ge=1, description="samples per instruction")
    temperature: float = Field(0.8, ge=0, description="0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(64, ge=1, description="new tokens per sample")
    stop: list[str] = Field(default_factory=list, description="extra stop strings")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint for backend vllm-server")
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="vLLM's KV-cache share of device memory (of RAM on CPU)"
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        description="vLLM KV cache size in GiB, overriding gpu_memory_utilization "
        "(on CPU vLLM subtracts the engine's own memory from that share, so small shares are refused)",
    )
    max_lora_rank: int = Field(16, ge=1, description="largest adapter rank backend vllm-lora accepts (≥ cut.lora.r)")
    between_rounds: Literal["keep", "sleep", "release"] = Field(
        "keep",
        description="what the engine does while the trainer runs: keep it warm; sleep (vLLM sleep mode level 1, "
        "GPU only, kept warm elsewhere); release it and start a new one at the next round",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="extra vllm.LLM arguments, passed through and overriding the sampler's own, "
        "e.g. tensor_parallel_size, data_parallel_size, enforce_eager (docs/scaling.md)",
    )
    concurrency: int = Field(16, ge=1, description="requests in flight at once for backend vllm-server")
    request_timeout: float = Field(300.0, gt=0, description="seconds per request for backend vllm-server")
    transformers_batch_size: int = Field(32, ge=1, description="prompts per generate() call for backend transformers")

    @model_validator(mode="after")
    def _server_needs_url(self) -> SamplerConfig:
        if self.backend == "vllm-server" and not self.base_url:
            raise ValueError("backend 'vllm-server' needs base_url")
        return self


class PromptsConfig(StrictModel):
    suite: Literal["addition", "format", "sums"] | None = Field(
        "addition", description="a built-in generated suite; None to read `file`"
    )
    file: ExistingFile | None = Field(None, description="instructions as JSON/JSONL (CUT paper fields) or Parquet")
    per_round: int = Field(64, ge=1, description="instructions sampled each round")
    seed: int = Field(0, description="seed of the generated suite's training split")

    @model_validator(mode="after")
    def _one_source(self) -> PromptsConfig:
        if (self.suite is None) == (self.file is None):
            raise ValueError("set exactly one of `suite` and `file`")
        return self
