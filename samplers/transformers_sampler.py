"""transformers `generate`, batched with left padding, the adapter through PEFT: for machines without vLLM."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from cut.fingerprint import ProbeSequence, score_probe
from samplers.adapters import AdapterInfo
from samplers.base import Sampler, precision_of
from samplers.config import SamplerConfig
from samplers.records import FinishReason, Prompt, Sample, SamplingSettings


class TransformersSampler(Sampler):
    backend = "transformers"

    def __init__(self, config: SamplerConfig, base_model: str, reason: str = "", *, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(config, base_model, reason)
        self.precision = precision_of(dtype)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._tokenizer = AutoTokenizer.from_pretrained(base_model, padding_side="left")
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype).to(self._device).eval()
        eos = self._model.generation_config.eos_token_id
        self._eos_ids = {self._tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self._peft: Any = None  # the PeftModel wrapping the base while an adapter is attached

    def _activate(self, adapter: AdapterInfo | None, engine_name: str | None, version: int) -> None:
        from peft import PeftModel

        if engine_name is not None:  # PEFT names modules after the adapter, and a module name has no '.'
            engine_name = engine_name.replace(".", "_")
        if adapter is None:
            if self._peft is not None:
                self._model, self._peft = self._peft.unload(), None
        elif self._peft is None:
            self._peft = PeftModel.from_pretrained(self._model, str(adapter.path), adapter_name=engine_name)
        else:
            superseded = self._peft.active_adapter
            self._peft.load_adapter(str(adapter.path), adapter_name=engine_name)
            self._peft.set_adapter(engine_name)
            self._peft.delete_adapter(superseded)

    def _score_probe(self, sequences: tuple[ProbeSequence, ...]) -> list[list[float]]:
        return score_probe(self._peft if self._peft is not None else self._model, sequences)

    def _generate(self, prompts: list[Prompt], settings: SamplingSettings, logprobs: bool) -> list[Sample]:
        import torch

        batch_size = self.config.transformers_batch_size
        samples: list[Sample] = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(prompts), batch_size), desc="sampling", unit="batch", disable=logprobs):
                samples += self._generate_batch(prompts[start : start + batch_size], settings, logprobs)
        return samples

    def _generate_batch(self, prompts: list[Prompt], settings: SamplingSettings, logprobs: bool) -> list[Sample]:
        texts = [
            self._tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
            for prompt in prompts
        ]
        batch = self._tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
        # Greedy decoding gives one answer; it is generated once and recorded `n` times.
        per_prompt = 1 if settings.greedy else settings.n
        options: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if not settings.greedy:
            options = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": None}
        if settings.stop:
            options |= {"stop_strings": list(settings.stop), "tokenizer": self._tokenizer}
        model = self._peft if self._peft is not None else self._model
        output = model.generate(
            **batch,
            max_new_tokens=settings.max_tokens,
            num_return_sequences=per_prompt,
            pad_token_id=self._tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=logprobs,
            **options,
        )
        new_tokens = output.sequences[:, batch.input_ids.shape[1] :]
        scores = (
            self._model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
            if logprobs
            else None
        )
        prompt_lengths = batch.attention_mask.sum(dim=1).tolist()
        stored_params = settings.as_dict()
        samples = []
        for row, tokens in enumerate(new_tokens.tolist()):
            prompt_index = row // per_prompt
            text, length, finish_reason = self._decode(tokens, settings.stop)
            for sample_index in range(row % per_prompt, settings.n, per_prompt):
                samples.append(
                    Sample(
                        prompt_id=prompts[prompt_index].prompt_id,
                        sample_index=sample_index,
                        text=text,
                        finish_reason=finish_reason,
                        prompt_tokens=prompt_lengths[prompt_index],
                        completion_tokens=length,
                        adapter=self.adapter,
                        params=stored_params,
                        token_logprobs=tuple(scores[row, :length].tolist()) if scores is not None else None,
                    )
                )
        return samples

    def _decode(self, tokens: list[int], stop: tuple[str, ...]) -> tuple[str, int, FinishReason]:
        """The text up to the end-of-sequence token or a stop string, its token count (as vLLM
        counts them, end-of-sequence included) and why it ended."""
        end = next((i for i, token in enumerate(tokens) if token in self._eos_ids), None)
        length = len(tokens) if end is None else end + 1
        finish_reason: FinishReason = "length" if end is None else "stop"
        text = self._tokenizer.decode(tokens[:length], skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text, finish_reason = text[:cut], "stop"
        return text, length, finish_reason

    def close(self) -> None:
        self._model = self._peft = None
