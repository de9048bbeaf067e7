"""A judge behind any OpenAI-compatible chat endpoint: OpenAI itself, or vLLM serving a critic.

Retries (429 honouring Retry-After, 5xx, timeouts; exponential backoff with jitter) are the
openai SDK's own, set through `max_retries` and `timeout`. On top of that this module adds a
concurrency cap, a run-level budget, and one repair round for a reply that is not the asked
JSON object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import openai
from openai.types.chat import ChatCompletion

from judges.base import Judge, Progress
from judges.cache import JudgmentCache
from judges.config import JudgeConfig
from judges.judgment import JudgeItem, Judgment
from judges.prompt import MalformedReply, judge_messages, parse_reply, repair_messages, reply_json_schema
from storage.redact import known_secrets, register_secret, scrub_text

KeyProvider = Callable[[], str | None]
"""Returns the API key when judging starts (None: no key is set)."""

# Local OpenAI-compatible servers (vLLM without --api-key) accept any key, but the SDK needs one.
KEYLESS_PLACEHOLDER = "no-key"
BUDGET_EXHAUSTED = "budget exhausted"


class MissingApiKey(RuntimeError):
    """Judging api.openai.com with no key set."""


class Budget:
    """The run's allowance of requests and tokens, shared by every call of one judge.

    Requests are counted when sent (a repair is a request); tokens when a reply reports its
    usage, so requests already in flight may overshoot the token budget by their replies.
    """

    def __init__(self, max_requests: int | None, max_total_tokens: int | None) -> None:
        self.max_requests = max_requests
        self.max_total_tokens = max_total_tokens
        self.requests = 0
        self.tokens = 0

    def take_request(self) -> bool:
        """Count one request if the budget allows it."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            return False
        if self.max_total_tokens is not None and self.tokens >= self.max_total_tokens:
            return False
        self.requests += 1
        return True


class OpenAIJudge(Judge):
    def __init__(
        self, config: JudgeConfig, api_key: KeyProvider, judge_id: str, cache: JudgmentCache | None = None
    ) -> None:
        super().__init__(judge_id, cache)
        self.config = config
        self.api_key = api_key
        self.budget = Budget(config.max_requests, config.max_total_tokens)

    def _client(self) -> openai.AsyncOpenAI:
        key = self.api_key()
        register_secret(key)  # whatever the variable's or block's name, the key never lands in a reply or log
        if key is None:
            if self.config.base_url is None:
                raise MissingApiKey(
                    f"judge.api_key_env: the environment variable {self.config.api_key_env} is not set "
                    "(api.openai.com needs a key)"
                )
            key = KEYLESS_PLACEHOLDER
        return openai.AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=key,
            max_retries=self.config.max_retries,
            timeout=self.config.timeout_s,
        )

    async def _judge_fresh(self, items: list[JudgeItem], progress: Progress) -> list[Judgment]:
        if not items:
            return []
        in_flight = asyncio.Semaphore(self.config.concurrency)
        async with self._client() as client:

            async def judge_one(item: JudgeItem) -> Judgment:
                async with in_flight:
                    judgment = await self._judge_one(client, item)
                    await self.keep([(item, judgment)])  # stored before the slot takes another request
                progress(1)
                return judgment

            return list(await asyncio.gather(*(judge_one(item) for item in items)))

    def request_body(self, messages: list[dict[str, str]]) -> dict:
        """The chat request for `messages`: the same model, caps and reply schema online and in a batch."""
        config = self.config
        extra = {"response_format": reply_json_schema(config.judgment_max_chars)} if config.structured_output else {}
        return {
            "model": config.model,
            "messages": messages,
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "frequency_penalty": config.frequency_penalty,
            **extra,
        }

    async def _judge_one(self, client: openai.AsyncOpenAI, item: JudgeItem) -> Judgment:
        config = self.config
        messages = judge_messages(item, config.system_prompt, config.user_template)
        started = time.perf_counter()
        input_tokens = output_tokens = 0
        raw: str | None = None

        def outcome(**fields) -> Judgment:
            if fields.get("error"):
                fields["error"] = without_secrets(fields["error"])
            return Judgment(
                judge_id=self.judge_id,
                raw=without_secrets(raw),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=self._cost(input_tokens, output_tokens),
                latency_s=time.perf_counter() - started,
                **fields,
            )

        problem = ""
        for attempt in ("first", "repair"):
            if attempt == "repair":
                messages = repair_messages(messages, raw or "", problem)
            if not self.budget.take_request():
                return outcome(status="failed", error=BUDGET_EXHAUSTED)
            try:
                # `client.post` is the SDK's documented way to send a raw body (retries and
                # timeout still apply); it skips `chat.completions.create`'s parameter
                # transform, a no-op for plain-text messages that cost a third of the
                # client's CPU per request (bench/judge.py).
                completion = await client.post("/chat/completions", body=self.request_body(messages), cast_to=ChatCompletion)
            except openai.APIError as exc:
                return outcome(status="failed", error=_describe_api_error(exc))
            except ValueError:  # a body that says it is JSON and is not
                completion = None
            if not isinstance(completion, ChatCompletion) or not completion.choices:
                problem = "the server's reply is not a chat completion"
                continue
            if completion.usage is not None:
                input_tokens += completion.usage.prompt_tokens
                output_tokens += completion.usage.completion_tokens
                self.budget.tokens += completion.usage.total_tokens
            choice = completion.choices[0]
            raw = choice.message.content
            try:
                reply = parse_reply(raw, choice.finish_reason)
            except MalformedReply as exc:
                problem = str(exc)
                continue
            return outcome(status="ok", **reply.judgment_fields(item.response))
        return outcome(status="failed", error=f"malformed reply after one repair: {problem}")

    def _cost(self, input_tokens: int, output_tokens: int) -> float | None:
        price_in, price_out = self.config.price_input_per_1k, self.config.price_output_per_1k
        if price_in is None or price_out is None:
            return None
        return (input_tokens * price_in + output_tokens * price_out) / 1000


def without_secrets(text: str | None) -> str | None:
    """A server may echo what it was sent (a key in an error text, say): nothing known to be secret leaves a judge."""
    return text and scrub_text(text, known_secrets())


def _describe_api_error(exc: openai.APIError) -> str:
    """A short reason for a request that failed after the SDK's retries (never the key:
    the SDK's messages carry the server's error text, not the request headers)."""
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out after retries"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} after retries: {exc.message}"[:300]
    return f"{type(exc).__name__}: {exc.message}"[:300]
