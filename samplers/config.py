"""How responses are sampled, and which instructions each round samples for."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from formats.strict_model import ExistingFile, StrictModel


# The max_lora_rank values vLLM's LoRA config accepts (vllm/config/lora.py).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


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
        0.3, gt=0, le=1, description="the share of device memory vLLM's engine may use in all, weights, activations "
        "and KV cache (of RAM on CPU, where the engine's own footprint comes out of it first)"
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        description="vLLM KV cache size in GiB, overriding gpu_memory_utilization "
        "(on CPU vLLM subtracts the engine's own memory from that share, so small shares are refused)",
    )
    max_lora_rank: int = Field(
        16, description=f"largest adapter rank backend vllm-lora accepts (≥ cut.lora.r); vLLM takes {VLLM_LORA_RANKS}"
    )
    between_rounds: Literal["keep", "sleep", "release"] = Field(
        "keep",
        description="what the engine does while the trainer runs: keep it warm; sleep (vLLM sleep mode level 1, "
        "GPU only, kept warm elsewhere); release it and start a new one at the next round",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="extra vllm.LLM arguments, passed through and overriding the sampler's own, e.g. "
        "tensor_parallel_size, enforce_eager; data parallelism needs a server per replica or vLLM's own DP serving "
        "behind backend vllm-server (docs/scaling.md)",
    )
    concurrency: int = Field(16, ge=1, description="requests in flight at once for backend vllm-server")
    request_timeout: float = Field(300.0, gt=0, description="seconds per request for backend vllm-server")
    transformers_batch_size: int = Field(32, ge=1, description="prompts per generate() call for backend transformers")

    @field_validator("max_lora_rank")
    @classmethod
    def _a_rank_vllm_takes(cls, rank: int) -> int:
        if rank not in VLLM_LORA_RANKS:
            raise ValueError(f"vLLM takes a max_lora_rank of {', '.join(map(str, VLLM_LORA_RANKS))}; got {rank}")
        return rank

    @model_validator(mode="after")
    def _no_data_parallel_in_process(self) -> SamplerConfig:
        if self.backend != "vllm-server" and self.engine_args.get("data_parallel_size", 1) != 1:
            raise ValueError(
                "engine_args.data_parallel_size: vLLM's in-process engine refuses data parallelism (\"not supported for "
                "single-process usage\"); run a vLLM server per replica, or vLLM's own data-parallel serving, behind "
                "backend vllm-server (docs/scaling.md)"
            )
        return self

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
