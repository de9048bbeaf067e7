"""The one judge interface: `await judge.judge_many(items)` or `judge.judge_many_sync(items)`.

Every judge returns exactly one `Judgment` per item, in order; an item that could not be
judged comes back with status 'failed' and the reason, never missing. The base class answers
what it can from the cache, sends each distinct item to the judge once, and caches the
judgments (a failed one is not reused: it is tried again on the next run). A judge that
finishes items one at a time awaits `keep` with each as it is made (a group commit,
`judges.cache.GroupCommit`), so a kill loses at most the requests in flight.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from judges.cache import GroupCommit, JudgmentCache, item_key
from judges.judgment import JudgeItem, Judgment

Progress = Callable[[int], None]
"""Called with the number of items just finished (to drive a progress bar)."""


def _no_progress(_: int) -> None:
    pass


class Judge(ABC):
    def __init__(self, judge_id: str, cache: JudgmentCache | None = None) -> None:
        self.judge_id = judge_id
        self.cache = cache
        self._group_commit: GroupCommit | None = None  # the running `judge_many`'s writer

    def close(self) -> None:
        """Free what the judge holds (a local critic's engine); it starts again when next asked."""

    async def judge_many(self, items: Sequence[JudgeItem], progress: Progress | None = None) -> list[Judgment]:
        progress = progress or _no_progress
        keys = [item_key(item) for item in items]
        distinct = dict(zip(keys, items))  # equal items are judged once
        results: dict[str, Judgment] = {}
        if self.cache is not None:
            known = self.cache.get_many(self.judge_id, list(distinct.values()))
            for key, judgment in zip(distinct, known):
                if judgment is not None:
                    results[key] = judgment.model_copy(update={"cached": True})
        cached = sum(1 for key in keys if key in results)
        progress(cached)

        fresh_keys = [key for key in distinct if key not in results]
        self._group_commit = None if self.cache is None else GroupCommit(self.cache, self.judge_id)
        fresh = await self._judge_fresh([distinct[key] for key in fresh_keys], progress)
        if len(fresh) != len(fresh_keys):
            raise RuntimeError(f"{self.judge_id} returned {len(fresh)} judgments for {len(fresh_keys)} items")
        results.update(zip(fresh_keys, fresh))
        progress(len(items) - len(fresh_keys) - cached)  # repeats of freshly judged items
        if self.cache is not None:
            # Every item, cached and kept ones too: an equal item the pipeline sampled again (a
            # new response_id) gets its judgment recorded; what is already stored stays as it is.
            self.cache.put_many(self.judge_id, [(item, results[key]) for item, key in zip(items, keys)])
        return [results[key] for key in keys]

    async def keep(self, entries: Sequence[tuple[JudgeItem, Judgment]]) -> None:
        """Store fresh judgments in the cache now, before the rest of the call's items are done."""
        if self._group_commit is not None:
            await self._group_commit.keep(entries)

    def judge_many_sync(self, items: Sequence[JudgeItem], progress: Progress | None = None) -> list[Judgment]:
        return asyncio.run(self.judge_many(items, progress))

    @abstractmethod
    async def _judge_fresh(self, items: list[JudgeItem], progress: Progress) -> list[Judgment]:
        """One judgment per item, in order; call `progress(n)` as items finish."""
