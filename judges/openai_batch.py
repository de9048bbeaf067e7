"""Judging through the OpenAI Batch API: half the price and a separate rate limit, for a wait of
minutes to hours (`judge.mode: batch`).

    unjudged items ─► request file (JSONL, prompts only, kept under judge.batch_dir)
                   ─► files.create ─► batches.create ─► recorded in the ledger (the store)
                   ─► polled with backoff ─► output and error files ─► replies checked as online

A batch is recorded before any wait, so a rerun after a crash finds it and polls it again
instead of paying for a second one. Every request a batch leaves unanswered — an error line, a
malformed reply, a line missing from an expired, cancelled or failed batch — gets one more
try (`judge.batch_retry`): in a second batch (recorded the same way, a malformed reply asked
again with the repair prompt online judging uses), online, or not at all; then it is failed
with its reason. A request's `custom_id` is the response's id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import openai
from openai.types import Batch
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from formats.spans import SpanQuote, locate
from judges.base import Progress
from judges.cache import JudgmentCache, item_key
from judges.config import JudgeConfig
from judges.judgment import JudgeItem, Judgment
from judges.openai_judge import BUDGET_EXHAUSTED, KeyProvider, OpenAIJudge, without_secrets
from judges.prompt import MalformedReply, judge_messages, parse_reply, repair_messages

if TYPE_CHECKING:
    from storage.records import JudgeBatch
    from storage.store import Store

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
FINISHED = {"completed", "failed", "expired", "cancelled"}
UNANSWERED = {
    "completed": "missing from the batch's output",
    "failed": "the batch failed",
    "expired": "the batch expired before answering it",
    "cancelled": "the batch was cancelled before answering it",
}
Messages = list[dict[str, str]]
Finished = Callable[[int], None]
"""Told how many requests of an attempt its batches have finished so far."""


class BatchLedger(Protocol):
    """Where a judge's batches are recorded: the store in the pipeline."""

    def batches(self, judge_id: str, attempt: int) -> list[JudgeBatch]: ...

    def record(self, batch: JudgeBatch) -> None: ...

    def update(self, batch: JudgeBatch) -> None: ...


class StoreBatchLedger:
    """Batches kept in the store's `judge_batches` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def batches(self, judge_id: str, attempt: int) -> list[JudgeBatch]:
        return self.store.judge_batches(judge_id, attempt)

    def record(self, batch: JudgeBatch) -> None:
        self.store.add_judge_batch(batch)

    def update(self, batch: JudgeBatch) -> None:
        self.store.update_judge_batch(batch)


@dataclass(frozen=True)
class _Answer:
    judgment: Judgment
    retry: Messages | None = None  # what to ask on the one more try; None: the answer is final
    quotes: list[SpanQuote] = field(default_factory=list)  # what the reply blames, to locate in the response

    def located(self, response: str) -> Judgment:
        """The judgment with its quotes located in the response it judged."""
        return self.judgment.model_copy(update={"spans": tuple(locate(response, self.quotes))}) if self.quotes else self.judgment


def request_id(item: JudgeItem) -> str:
    """The request's custom_id: the response's id, or (judged offline) a hash of what is judged."""
    return item.response_id or item_key(item)


class OpenAIBatchJudge(OpenAIJudge):
    def __init__(
        self,
        config: JudgeConfig,
        api_key: KeyProvider,
        judge_id: str,
        ledger: BatchLedger,
        cache: JudgmentCache | None = None,
    ) -> None:
        super().__init__(config, api_key, judge_id, cache)
        self.ledger = ledger

    async def _judge_fresh(self, items: list[JudgeItem], progress: Progress) -> list[Judgment]:
        if not items:
            return []
        config = self.config
        by_id = {request_id(item): item for item in items}
        first = {rid: judge_messages(item, config.system_prompt, config.user_template) for rid, item in by_id.items()}
        reported = 0

        def finished_so_far(done: int) -> None:  # of the first batch, which holds every item
            nonlocal reported
            if done > reported:
                progress(done - reported)
                reported = done

        async with self._client() as client:
            answers = await self._attempt(client, 1, first, finished_so_far)
            retry = {rid: a.retry for rid, a in answers.items() if a.retry is not None}
            if retry and config.batch_retry == "batch":
                log.info("%s: %d requests unanswered; one more try in a new batch", self.judge_id, len(retry))
                answers |= await self._attempt(client, 2, retry, lambda done: None)
            elif retry and config.batch_retry == "online":
                log.info("%s: %d requests unanswered; one more try online", self.judge_id, len(retry))
                again = await asyncio.gather(*(self._judge_one(client, by_id[rid]) for rid in retry))
                answers |= {rid: _Answer(judgment) for rid, judgment in zip(retry, again)}
        progress(len(items) - reported)
        return [answers[rid].located(by_id[rid].response) for rid in by_id]

    async def _attempt(
        self, client: openai.AsyncOpenAI, attempt: int, messages: dict[str, Messages], finished: Finished
    ) -> dict[str, _Answer]:
        """Answers to `messages` from this attempt's recorded batches, and from a new one for the rest;
        `finished` is told how many requests of them the batches have finished so far."""
        batches = [b for b in self.ledger.batches(self.judge_id, attempt) if not messages.keys().isdisjoint(b.request_ids)]
        covered = {rid for batch in batches for rid in batch.request_ids}
        if batches:
            log.info("%s: %d requests are in %d recorded batches (%s); polling them, not submitting again",
                     self.judge_id, len(covered & messages.keys()), len(batches), ", ".join(b.batch_id for b in batches))
        fresh = {rid: m for rid, m in messages.items() if rid not in covered}
        answers: dict[str, _Answer] = {}
        affordable = {}
        for rid, m in fresh.items():
            if self.budget.take_request():
                affordable[rid] = m
            else:
                answers[rid] = _Answer(Judgment.failed(self.judge_id, BUDGET_EXHAUSTED))
        if affordable:
            batches.append(await self._submit(client, attempt, affordable))
        done = [await self._wait(client, batch, finished, total=len(messages)) for batch in batches]
        for batch in done:
            answers |= await self._results(client, batch, messages)
        for rid in messages.keys() - answers.keys():
            reason = UNANSWERED[next(b.status for b in done if rid in b.request_ids)]
            answers[rid] = _Answer(Judgment.failed(self.judge_id, reason), retry=messages[rid])
        return {rid: answers[rid] for rid in messages}

    async def _submit(self, client: openai.AsyncOpenAI, attempt: int, messages: dict[str, Messages]) -> JudgeBatch:
        from storage.records import JudgeBatch

        lines = [{"custom_id": rid, "method": "POST", "url": ENDPOINT, "body": self.request_body(m)} for rid, m in messages.items()]
        path = self._request_file(attempt, list(messages))
        _write_whole(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        with path.open("rb") as handle:
            uploaded = await client.files.create(file=handle, purpose="batch")
        created = await client.batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window=self.config.completion_window
        )
        batch = JudgeBatch(batch_id=created.id, judge=self.judge_id, attempt=attempt, request_ids=list(messages),
                           input_file_id=uploaded.id, request_file=str(path), status=created.status)
        self.ledger.record(batch)
        log.info("%s: batch %s submitted (%d requests, attempt %d; request file %s)",
                 self.judge_id, batch.batch_id, len(lines), attempt, path)
        return batch

    def _request_file(self, attempt: int, request_ids: list[str]) -> Path:
        digest = hashlib.sha256("\n".join(sorted(request_ids)).encode()).hexdigest()[:12]
        judge = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.judge_id)
        return Path(self.config.batch_dir) / f"{judge}-attempt{attempt}-{digest}.jsonl"

    async def _wait(self, client: openai.AsyncOpenAI, batch: JudgeBatch, finished: Finished, total: int) -> JudgeBatch:
        """Poll until the batch finishes, with backoff; its status and counts go to the ledger, the log and `finished`."""
        delay = self.config.batch_poll_s
        while True:
            remote: Batch = await client.batches.retrieve(batch.batch_id)
            counts = remote.request_counts
            seen = batch.model_copy(update={
                "status": remote.status, "output_file_id": remote.output_file_id, "error_file_id": remote.error_file_id,
                "completed": counts.completed if counts else None, "failed": counts.failed if counts else None,
            })
            if seen != batch:
                self.ledger.update(seen)
                log.info("%s: batch %s %s: %s completed, %s failed of %s", self.judge_id, seen.batch_id, seen.status,
                         seen.completed, seen.failed, counts.total if counts else "?")
                finished(min(total, (seen.completed or 0) + (seen.failed or 0)))
            batch = seen
            if batch.status in FINISHED:
                if remote.errors and remote.errors.data:
                    log.warning("%s: batch %s %s: %s", self.judge_id, batch.batch_id, batch.status,
                                "; ".join(f"{e.code}: {e.message}" for e in remote.errors.data))
                return batch
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.config.batch_poll_max_s)

    async def _results(self, client: openai.AsyncOpenAI, batch: JudgeBatch, messages: dict[str, Messages]) -> dict[str, _Answer]:
        answers: dict[str, _Answer] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id is None:
                continue
            text = (await client.files.content(file_id)).text
            for number, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    result = json.loads(line)
                    rid = result["custom_id"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("%s: batch %s, file %s line %d is not a result line; skipped",
                                self.judge_id, batch.batch_id, file_id, number)
                    continue
                if rid in messages:
                    answers[rid] = self._answer(result, messages[rid])
        return answers

    def _answer(self, result: dict, messages: Messages) -> _Answer:
        """A result line checked as an online reply is: a chat completion whose content parses."""
        response = result.get("response") or {}
        error = result.get("error")
        if error or response.get("status_code") != 200:
            detail = error or (response.get("body") or {}).get("error") or {}
            reason = f"batch error {detail.get('code', response.get('status_code'))}: {detail.get('message', 'no reply')}"
            return _Answer(Judgment.failed(self.judge_id, without_secrets(reason[:300])), retry=messages)
        try:
            completion = ChatCompletion.model_validate(response.get("body"))
            choice = completion.choices[0]
        except (ValidationError, IndexError):
            return _Answer(Judgment.failed(self.judge_id, "the batch's reply is not a chat completion"), retry=messages)
        usage = completion.usage
        input_tokens, output_tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        self.budget.tokens += input_tokens + output_tokens
        cost = self._cost(input_tokens, output_tokens)
        tokens = dict(input_tokens=input_tokens, output_tokens=output_tokens,
                      cost_usd=None if cost is None else cost * self.config.batch_discount,
                      raw=without_secrets(choice.message.content))
        try:
            reply = parse_reply(choice.message.content, choice.finish_reason)
        except MalformedReply as exc:
            return _Answer(Judgment.failed(self.judge_id, f"malformed reply: {exc}", **tokens),
                           retry=repair_messages(messages, choice.message.content or "", str(exc)))
        return _Answer(Judgment(status="ok", verdict=reply.verdict, judgment=reply.judgment, score=reply.score,
                                judge_id=self.judge_id, **tokens), quotes=reply.spans)


def _write_whole(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
