"""Opening the DuckDB file under its one-writer lock.

DuckDB lets one process at a time open a database file for writing, and while it has it
open no other process can open it at all. A store connection therefore lives for one
transaction only, and opening one waits out a short conflict with bounded, jittered
retries; past the limit it fails with `StoreLocked`, naming the process that holds the lock.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

# DuckDB's text: 'Could not set lock on file "x": Conflicting lock is held in /usr/bin/python3 (PID 4211).'
_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


class StoreLocked(RuntimeError):
    """Another process holds the database file's lock; `holder` says which one, as DuckDB reports it."""

    def __init__(self, path: Path, holder: str, waited_s: float) -> None:
        self.path, self.holder, self.waited_s = path, holder, waited_s
        super().__init__(
            f"{path} is locked by another process: {holder} (gave up after {waited_s:g} s). "
            "DuckDB allows one process at a time to open the file; wait for it to finish or stop it, then retry."
        )


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def lock_holder(exc: BaseException) -> str:
    """'PID 4211 (/usr/bin/python3)' from DuckDB's lock error, or its whole text if the format changes."""
    found = _HOLDER.search(str(exc))
    return f"PID {found['pid']} ({found['program']})" if found else str(exc)


def connect(
    path: Path, *, read_only: bool = False, timeout_s: float = 30.0, config: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open `path` (with DuckDB settings `config`), retrying while another process holds its lock for up to `timeout_s` seconds."""
    retrying = Retrying(
        retry=retry_if_exception(_is_lock_conflict),
        stop=stop_after_delay(timeout_s),
        wait=wait_exponential_jitter(initial=0.05, max=1.0),
        reraise=True,
    )
    try:
        return retrying(duckdb.connect, str(path), read_only=read_only, config=config or {})
    except duckdb.IOException as exc:
        if _is_lock_conflict(exc):
            raise StoreLocked(path, lock_holder(exc), timeout_s) from None
        raise
