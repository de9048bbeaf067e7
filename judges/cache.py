"""The judgment cache: nothing is judged, or paid for, twice.

A cache answers by item and judge id. The judge id names the judge and a hash of everything
in its set-up that could change the answer (kind, model, endpoint, prompt, sampling), e.g.
`openai:gpt-4o@1f2e3d4c5b6a`; the API key is never part of it, so it never reaches a cache.
`StoreJudgmentCache` keeps judgments in the project's DuckDB store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from formats import keys
from judges.judgment import JudgeItem, Judgment

if TYPE_CHECKING:
    from storage.records import Judgment as StoredJudgment
    from storage.store import Store


class JudgmentCache(Protocol):
    def get_many(self, judge_id: str, items: Sequence[JudgeItem]) -> list[Judgment | None]:
        """The stored successful judgment of each item by this judge, or None."""
        ...

    def put_many(self, judge_id: str, entries: Sequence[tuple[JudgeItem, Judgment]]) -> None:
        """Record new judgments, failed ones included (a later success replaces a failure)."""
        ...


def item_key(item: JudgeItem) -> str:
    """A stable sha256 of what is judged: instruction, input, response (and rule metadata)."""
    payload = [item.instruction, item.input, item.response, item.metadata]
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class StoreJudgmentCache:
    """Judgments kept in the project's DuckDB store, found again by (instruction, input,
    response, judge id) in any run.

    An item the pipeline sampled carries its `response_id`, and its judgment is stored under
    it. An item judged offline (a dataset through `online-cut judge`) has none: its judgment goes to
    the stored response with the same instruction, input and text (one imported from the same file,
    say, so `online-cut judges agree` compares the two judges), else to a new response of the run
    `offline_run`, round 0, so it shows in the `triples` view too.
    """

    def __init__(self, store: Store, offline_run: str = "offline-judge") -> None:
        self.store = store
        self.offline_run = offline_run

    def get_many(self, judge_id: str, items: Sequence[JudgeItem]) -> list[Judgment | None]:
        stored = self.store.cached_judgments([(item.instruction, item.input, item.response) for item in items], judge_id)
        return [None if judgment is None else _from_stored(judgment) for judgment in stored]

    def put_many(self, judge_id: str, entries: Sequence[tuple[JudgeItem, Judgment]]) -> None:
        from storage.records import Prompt, Response

        prompts, responses, judgments = [], [], []
        stored = self._stored_responses([item for item, _ in entries if item.response_id is None])
        for item, judgment in entries:
            response_id = item.response_id or stored.get((keys.prompt_id(item.instruction, item.input), item.response))
            if response_id is None:
                prompt = Prompt(instruction=item.instruction, input=item.input, source="online-cut judge")
                response = Response(
                    run=self.offline_run,
                    round=0,
                    prompt_id=prompt.prompt_id,
                    text=item.response,
                    sample_index=_offline_sample_index(item.response),
                )
                prompts.append(prompt)
                responses.append(response)
                response_id = response.response_id
            judgments.append(stored_judgment(response_id, judge_id, judgment))
        with self.store.transaction() as tx:
            tx.add_prompts(prompts)
            tx.add_responses(responses)
            tx.add_judgments(judgments)

    def _stored_responses(self, items: Sequence[JudgeItem]) -> dict[tuple[str, str], str]:
        """(prompt id, text) → the first stored response with them, for the items given."""
        if not items:
            return {}
        rows = self.store.query(
            "WITH wanted AS (SELECT DISTINCT unnest(?::VARCHAR[]) AS prompt_id, unnest(?::VARCHAR[]) AS text) "
            "SELECT r.prompt_id, r.text, r.response_id FROM responses r JOIN wanted w USING (prompt_id, text) "
            "QUALIFY row_number() OVER (PARTITION BY r.prompt_id, r.text ORDER BY r.created_at, r.response_id) = 1",
            [[keys.prompt_id(item.instruction, item.input) for item in items], [item.response for item in items]],
        )
        return {(row["prompt_id"], row["text"]): row["response_id"] for row in rows}


class GroupCommit:
    """Writes judgments to a cache as they are made, in as few transactions as keep up with them:
    whoever arrives while no write runs writes everything waiting (a store transaction costs far
    more than one row). `await keep(...)` returns once its judgments are stored, so a judge that
    awaits it before freeing its request slot has at most its slots' answers unstored."""

    def __init__(self, cache: JudgmentCache, judge_id: str) -> None:
        self.cache, self.judge_id = cache, judge_id
        self._waiting: list[tuple[tuple[JudgeItem, Judgment], asyncio.Future[None]]] = []
        self._writing = asyncio.Lock()

    async def keep(self, entries: Sequence[tuple[JudgeItem, Judgment]]) -> None:
        stored = asyncio.get_running_loop().create_future()
        self._waiting.extend((entry, stored) for entry in entries)
        async with self._writing:
            if not stored.done():
                batch, self._waiting = self._waiting, []
                futures = {id(f): f for _, f in batch}.values()
                try:
                    # In a thread, so requests already sent keep being answered meanwhile.
                    await asyncio.to_thread(self.cache.put_many, self.judge_id, [entry for entry, _ in batch])
                except Exception as exc:
                    for future in futures:
                        future.set_exception(exc)
                else:
                    for future in futures:
                        future.set_result(None)
        await stored


def stored_judgment(response_id: str, judge_id: str, judgment: Judgment) -> StoredJudgment:
    """The store's row for a judge's answer about one stored response."""
    from storage.records import Judgment as StoredJudgment

    return StoredJudgment(
        response_id=response_id,
        judge=judge_id,
        verdict=judgment.verdict if judgment.status == "ok" else "failed",
        judgment=judgment.judgment,
        score=judgment.score,
        raw_reply=judgment.raw,
        usage={"input_tokens": judgment.input_tokens, "output_tokens": judgment.output_tokens},
        cost_usd=judgment.cost_usd,
        latency_s=judgment.latency_s,
        error=judgment.error,
        spans=list(judgment.spans),
    )


def _offline_sample_index(response: str) -> int:
    """Distinct responses to one prompt need distinct sample indexes; derive a stable one."""
    return int(hashlib.sha256(response.encode()).hexdigest()[:7], 16)


def _from_stored(stored) -> Judgment:
    usage = stored.usage or {}
    return Judgment(
        status="ok",
        verdict=stored.verdict,
        judgment=stored.judgment,
        score=stored.score,
        raw=stored.raw_reply,
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        cost_usd=stored.cost_usd,
        latency_s=stored.latency_s or 0.0,
        judge_id=stored.judge,
        spans=tuple(stored.spans),
    )
