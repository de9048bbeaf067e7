"""A running vLLM OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server
--enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True): adapters loaded at run time.

Each attach loads the adapter under a new versioned name through `/v1/load_lora_adapter`
and unloads the one it supersedes. Generation goes through the openai client, one request
per sample, at most `concurrency` in flight. An API key, if the server wants one, is read
from $VLLM_API_KEY and never stored.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from cut.fingerprint import ProbeSequence
from samplers.adapters import AdapterInfo
from samplers.base import Sampler, SamplerError
from samplers.config import SamplerConfig
from samplers.records import Prompt, Sample, SamplingSettings

API_KEY_ENV = "VLLM_API_KEY"


class VllmServerSampler(Sampler):
    backend = "vllm-server"
    precision = "half"  # the server does not report its dtype, so the looser tolerance applies

    def __init__(self, config: SamplerConfig, base_model: str, reason: str = "") -> None:
        import openai

        super().__init__(config, base_model, reason)
        self._client_options = {
            "base_url": config.base_url,
            "api_key": os.environ.get(API_KEY_ENV, "EMPTY"),
            "timeout": config.request_timeout,
        }
        client = openai.OpenAI(**self._client_options)
        try:
            served = client.models.list().data
        except openai.APIError as exc:
            raise SamplerError(f"vLLM server at {config.base_url} is not answering: {exc}") from None
        # LoRA adapters appear beside the base model in /v1/models, with the base as parent.
        base_models = [model.id for model in served if getattr(model, "parent", None) is None]
        if not base_models:
            raise SamplerError(f"vLLM server at {config.base_url} serves no model")
        self._served_model = base_models[0]
        self._client = client
        self._loaded: str | None = None  # the server-side name of the attached adapter

    def _activate(self, adapter: AdapterInfo | None, engine_name: str | None, version: int) -> None:
        superseded = self._loaded
        if adapter is not None:
            self._post("/load_lora_adapter", {"lora_name": engine_name, "lora_path": str(adapter.path.resolve())})
        self._loaded = engine_name
        if superseded is not None:
            self._post("/unload_lora_adapter", {"lora_name": superseded})

    def _post(self, path: str, body: dict[str, str]) -> None:
        import httpx
        import openai

        try:
            self._client.post(path, body=body, cast_to=httpx.Response)
        except openai.APIStatusError as exc:
            raise SamplerError(
                f"{self.config.base_url}{path} {body}: HTTP {exc.status_code}: {exc.message}. "
                "The server needs --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment."
            ) from None

    def _score_probe(self, sequences: tuple[ProbeSequence, ...]) -> list[list[float]]:
        """vLLM's completions endpoint scores token ids given as the prompt (`prompt_logprobs`, its extension),
        one sequence a request: its CPU LoRA kernels fail on prompt log-probs of several batched requests."""
        scores = []
        for sequence in sequences:
            reply = self._client.completions.create(
                model=self._loaded or self._served_model,
                prompt=list(sequence.token_ids),
                max_tokens=1,
                temperature=0.0,
                extra_body={"prompt_logprobs": 0},
            )
            response = sequence.response_ids
            steps = reply.choices[0].model_extra["prompt_logprobs"][-len(response) :]
            scores.append([step[str(token)]["logprob"] for step, token in zip(steps, response, strict=True)])
        return scores

    def _generate(self, prompts: list[Prompt], settings: SamplingSettings, logprobs: bool) -> list[Sample]:
        return asyncio.run(self._generate_async(prompts, settings, logprobs))

    async def _generate_async(self, prompts: list[Prompt], settings: SamplingSettings, logprobs: bool) -> list[Sample]:
        import openai
        from tqdm.asyncio import tqdm

        limit = asyncio.Semaphore(self.config.concurrency)
        stored_params = settings.as_dict()
        model = self._loaded or self._served_model

        async def one(client: Any, prompt: Prompt, sample_index: int) -> Sample:
            async with limit:
                reply = await client.chat.completions.create(
                    model=model,
                    messages=prompt.messages(),
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    max_tokens=settings.max_tokens,
                    stop=list(settings.stop) or None,
                    logprobs=logprobs,
                )
            choice = reply.choices[0]
            return Sample(
                prompt_id=prompt.prompt_id,
                sample_index=sample_index,
                text=choice.message.content or "",
                finish_reason=choice.finish_reason,
                prompt_tokens=reply.usage.prompt_tokens,
                completion_tokens=reply.usage.completion_tokens,
                adapter=self.adapter,
                params=stored_params,
                token_logprobs=tuple(token.logprob for token in choice.logprobs.content) if logprobs else None,
            )

        async with openai.AsyncOpenAI(**self._client_options) as client:
            requests = [one(client, prompt, index) for prompt in prompts for index in range(settings.n)]
            return await tqdm.gather(*requests, desc="sampling", unit="sample", disable=logprobs)

    def close(self) -> None:
        if self._loaded is not None:
            self._post("/unload_lora_adapter", {"lora_name": self._loaded})
            self._loaded = None
        self._client.close()
