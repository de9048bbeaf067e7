"""A local model as critic, through an in-process vLLM engine: the same prompt and parser as
the OpenAI-compatible judge, decoded under the reply's JSON schema, all items in one batch.

(The other way to run a local critic is a vLLM server: that is `OpenAIJudge` with a
`base_url`.) Scripts that create the engine need an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from judges.base import Judge, Progress
from judges.cache import JudgmentCache
from judges.config import JudgeConfig
from judges.judgment import JudgeItem, Judgment
from judges.prompt import MalformedReply, judge_messages, parse_reply, repair_messages, reply_json_schema

if TYPE_CHECKING:
    from vllm import LLM


class LocalCritic(Judge):
    def __init__(
        self, config: JudgeConfig, critic_path: str, judge_id: str, cache: JudgmentCache | None = None, llm: LLM | None = None
    ) -> None:
        super().__init__(judge_id, cache)
        self.config = config
        self.critic_path = critic_path
        self._llm = llm

    @property
    def llm(self) -> LLM:
        """The engine, started on first use (about a minute on CPU)."""
        if self._llm is None:
            from vllm import LLM

            # The KV cache in bytes, not as a memory share: on CPU vLLM subtracts the worker's
            # own footprint from the share, which leaves nothing for a small share. Eager mode
            # skips minutes of compilation, which a small critic does not win back.
            self._llm = LLM(
                model=self.critic_path,
                kv_cache_memory_bytes=self.config.critic_kv_cache_mib * 2**20,
                max_model_len=2048,
                dtype="bfloat16",
                enforce_eager=True,
            )
        return self._llm

    def close(self) -> None:
        """Stop the engine and free its memory (before training on the same machine, say).
        `vllm.LLM` has no close of its own; its engine-core client does."""
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None

    def _sampling_params(self) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        config = self.config
        schema = reply_json_schema(config.judgment_max_chars)["json_schema"]["schema"]
        return SamplingParams(
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            frequency_penalty=config.frequency_penalty,
            structured_outputs=StructuredOutputsParams(json=schema) if config.structured_output else None,
        )

    def _too_long(self, conversation: list[dict[str, str]]) -> str | None:
        """Why the critic cannot take `conversation`, or None: vLLM refuses a prompt that fills its context."""
        context = self.llm.llm_engine.model_config.max_model_len
        prompt = self.llm.get_tokenizer().apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        length = len(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        if length < context:
            return None
        return (f"too long for the critic's context: the prompt is {length} tokens, the critic's context holds "
                f"{context} (prompt and reply together)")

    async def _judge_fresh(self, items: list[JudgeItem], progress: Progress) -> list[Judgment]:
        """All items in one batch; the malformed replies once more, in a repair batch. An item whose
        prompt does not fit the critic's context fails alone, with the reason."""
        config = self.config
        conversations = [judge_messages(item, config.system_prompt, config.user_template) for item in items]
        results: dict[int, Judgment] = {}
        tokens = {i: (0, 0) for i in range(len(items))}
        pending = list(range(len(items)))
        for attempt in ("first", "repair"):
            for i in pending:
                if (reason := self._too_long(conversations[i])) is not None:
                    results[i] = Judgment.failed(self.judge_id, reason, input_tokens=tokens[i][0],
                                                 output_tokens=tokens[i][1])
            progress(sum(i in results for i in pending))
            pending = [i for i in pending if i not in results]
            if not pending:
                break
            started = time.perf_counter()
            outputs = self.llm.chat([conversations[i] for i in pending], self._sampling_params(), use_tqdm=False)
            latency = (time.perf_counter() - started) / len(pending)  # the batch's time, shared by its items
            malformed = []
            for i, output in zip(pending, outputs):
                completion = output.outputs[0]
                spent_in, spent_out = tokens[i]
                tokens[i] = (spent_in + len(output.prompt_token_ids or []), spent_out + len(completion.token_ids))
                common = dict(judge_id=self.judge_id, raw=completion.text, latency_s=latency,
                              input_tokens=tokens[i][0], output_tokens=tokens[i][1])
                try:
                    reply = parse_reply(completion.text, completion.finish_reason)
                except MalformedReply as exc:
                    if attempt == "repair":
                        results[i] = Judgment(status="failed", error=f"malformed reply after one repair: {exc}", **common)
                    else:
                        conversations[i] = repair_messages(conversations[i], completion.text, str(exc))
                        malformed.append(i)
                    continue
                results[i] = Judgment(
                    status="ok", **reply.judgment_fields(items[i].response), **common
                )
            progress(len(pending) - len(malformed))
            pending = malformed
        return [results[i] for i in range(len(items))]
