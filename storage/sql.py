"""Read-only SQL over the store for people: `online-cut sql "SELECT ..."`.

A query is checked before the database is touched: only SELECT (including SHOW, DESCRIBE,
SUMMARIZE) statements run, and EXPLAIN of a SELECT without ANALYZE (which would run the
statement it explains). The connection they run on cannot write or reach outside the store:
it is read-only, file access beyond the database (COPY, read_csv, read_text, ATTACH, ...) and
extension installs are off, and the configuration is locked so no statement can turn them
back on. A statement that outlives `timeout_s` is interrupted, so a forgotten query never
holds the file past the pipeline's lock timeout; `memory_limit` bounds what it may use.

While a writer (the pipeline, an import) holds the file's lock, the query runs instead over
the Parquet exports, copied into an in-memory database as the table `triples` before the
same lock-down; if there are none, `StoreUnavailable` says why.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from storage.connection import StoreLocked, connect
from storage.exporter import EXPORT_GLOB

# The settings that keep a user's query inside the store; `lock_configuration` last, so the
# rest can no longer be changed by `SET` or `RESET`.
LOCKED_DOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MEMORY_LIMIT = "2GB"
# What may stand between EXPLAIN and the statement it explains: space and comments.
_GAP = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


class QueryRefused(ValueError):
    """A query that is not a read, or not SQL at all."""


class QueryFailed(RuntimeError):
    """DuckDB could not run the query (unknown table, type error, time or memory limit, ...)."""


class StoreUnavailable(RuntimeError):
    """Neither the store nor an export can be read."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    note: str | None = None  # where the rows came from, when not from the store itself


def _refused(kind: str) -> QueryRefused:
    return QueryRefused(
        f"{kind} statements are refused: `online-cut sql` only reads (SELECT, SHOW, DESCRIBE, SUMMARIZE, "
        "EXPLAIN of a SELECT). The store is written by the pipeline and `online-cut import`."
    )


def _check_explain(query: str) -> None:
    """EXPLAIN only plans; EXPLAIN ANALYZE runs its statement, so it must be a SELECT and never analysed."""
    rest = query[len("explain") :]
    rest = rest[_GAP.match(rest).end() :]
    if re.match(r"analy[sz]e\b", rest, re.IGNORECASE):
        raise _refused("EXPLAIN ANALYZE")
    if rest.startswith("("):
        options, _, rest = rest[1:].partition(")")
        if re.search(r"\banaly[sz]e\b", options, re.IGNORECASE):
            raise _refused("EXPLAIN ANALYZE")
    try:
        explained = duckdb.extract_statements(rest)
    except duckdb.Error as exc:
        raise QueryRefused(f"not valid SQL after EXPLAIN: {exc}") from None
    if len(explained) != 1 or explained[0].type is not duckdb.StatementType.SELECT:
        kinds = ", ".join(s.type.name for s in explained) or "nothing"
        raise _refused(f"EXPLAIN of {kinds}")


def check_read_only(sql: str) -> None:
    """Raise `QueryRefused` unless every statement in `sql` only reads."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"not valid SQL: {exc}") from None
    if not statements:
        raise QueryRefused("no SQL statement given")
    for statement in statements:
        if statement.type is duckdb.StatementType.EXPLAIN:
            _check_explain(statement.query)
        elif statement.type is not duckdb.StatementType.SELECT:
            raise _refused(statement.type.name)


def run_query(
    sql: str,
    db_path: Path,
    exports_dir: Path,
    *,
    wait_s: float = 2.0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    params: Sequence[Any] = (),
) -> QueryResult:
    """Run a read-only query on the store, or on the Parquet exports while a writer holds the store; `params`
    fill its `?` placeholders."""
    check_read_only(sql)
    if not db_path.is_file():
        raise StoreUnavailable(f"no store at {db_path}: run `online-cut import FILE` or the pipeline first, or pass --db")
    try:
        db = connect(db_path, read_only=True, timeout_s=wait_s, config={"memory_limit": memory_limit, **LOCKED_DOWN})
    except StoreLocked as locked:
        return _query_exports(sql, exports_dir, locked, timeout_s=timeout_s, memory_limit=memory_limit, params=params)
    except duckdb.Error as exc:
        raise StoreUnavailable(f"cannot open {db_path}: {exc}") from None
    try:
        return _execute(db, sql, timeout_s, params=params)
    finally:
        db.close()


def _execute(db: duckdb.DuckDBPyConnection, sql: str, timeout_s: float, note: str | None = None,
             params: Sequence[Any] = ()) -> QueryResult:
    timer = threading.Timer(timeout_s, db.interrupt)
    timer.start()
    try:
        result = db.execute(sql, list(params))
        columns = [d[0] for d in result.description] if result.description else []
        return QueryResult(columns, result.fetchall() if columns else [], note)
    except duckdb.InterruptException:
        raise QueryFailed(
            f"the query was interrupted after {timeout_s:g} s (the time limit; --timeout raises it, but while it runs "
            "the pipeline cannot write the store)"
        ) from None
    except duckdb.Error as exc:
        raise QueryFailed(str(exc) + (f"\n({note})" if note else "")) from None
    finally:
        timer.cancel()


def _query_exports(
    sql: str, exports_dir: Path, locked: StoreLocked, *, timeout_s: float, memory_limit: str, params: Sequence[Any]
) -> QueryResult:
    files = sorted(exports_dir.glob(EXPORT_GLOB))
    if not files:
        raise StoreUnavailable(
            f"{locked.path} is locked by {locked.holder} (a writer: the pipeline or an import), and there is no "
            f"Parquet export in {exports_dir} to read instead. Try again when the writer is done, "
            "or pass --exports to point at an export folder."
        )
    newest = datetime.fromtimestamp(max(f.stat().st_mtime for f in files)).isoformat(sep=" ", timespec="seconds")
    note = (
        f"{locked.path} is locked by {locked.holder}; reading the Parquet exports in {exports_dir} "
        f"({len(files)} round files, newest written {newest}); only the `triples` table is available there"
    )
    pattern = str(exports_dir / EXPORT_GLOB).replace("'", "''")
    db = duckdb.connect(config={"memory_limit": memory_limit})
    try:
        # Copied in, not a view: once file access is off, nothing outside this database can be read or written.
        db.execute(f"""
            CREATE TABLE triples AS
            SELECT run, round, adapter, instruction, input, output AS response, judgment, verdict, judge,
                   created_at, response_id, score
            FROM read_parquet('{pattern}', hive_partitioning = true, hive_types = {{'run': VARCHAR, 'round': INTEGER}})
        """)
        for name, value in LOCKED_DOWN.items():
            db.execute(f"SET {name} = {str(value).lower()}")
        return _execute(db, sql, timeout_s, note, params)
    finally:
        db.close()
