"""The single-writer store: each write opens the DuckDB file, runs one transaction, closes.

    store = Store(".online-cut/store.duckdb")           # opens nothing yet
    store.add_prompts([Prompt(instruction="2+2?")])      # one transaction
    with store.transaction() as tx:                      # several writes, all or nothing
        tx.add_responses(responses)
        tx.add_judgments(judgments)

The first connection applies pending migrations. No connection outlives a call (or a
`with` block), so nothing holds DuckDB's file lock across sampling or training. Every write is idempotent: rows have natural keys and are
inserted with `ON CONFLICT DO NOTHING`, batches de-duplicated first, so repeating a write
adds nothing. Write methods return how many rows they added. Secrets are scrubbed from
every value on the way in (see `storage.redact`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from pydantic import TypeAdapter

from formats import keys
from storage.config import StorageConfig
from storage.connection import connect
from storage.migrations import apply_migrations
from storage.records import (
    Adapter,
    AdapterCheck,
    AdapterStatus,
    Detection,
    Evaluation,
    FlaggedToken,
    JudgeBatch,
    Judgment,
    Prompt,
    Refinement,
    Response,
    RoundState,
    RoundStep,
    TrainingStep,
    Triple,
)
from storage.redact import known_secrets, redact_payload, scrub_text

_STEP_COLUMN: dict[str, str] = {
    "sample": "sample_s", "judge": "judge_s", "refine": "refine_s", "train": "train_s", "eval": "eval_s",
}


class StoreError(ValueError):
    """A store path that cannot hold a store; the message names the path."""


class Transaction:
    """The write methods, all inside one open transaction (from `Store.transaction()`)."""

    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self.db = db

    def add_run(self, run: str, *, source: str = "pipeline", config: dict[str, Any] | None = None) -> int:
        """Record an alignment run (its resolved config, secrets removed); a known run is left as it is."""
        return self._insert("runs", [{"run": run, "source": source, "config": config}], key=("run",))

    def start_round(self, run: str, round: int, *, adapter_in: str | None = None, status: str = "running") -> int:
        """Record that a round started from `adapter_in` (None: base model); a known round is left as it is."""
        row = {"run": run, "round": round, "adapter_in": adapter_in, "status": status}
        return self._insert("rounds", [row], key=("run", "round"))

    def record_round_step(self, run: str, round: int, step: RoundStep, seconds: float) -> None:
        """Store how long a round's step took; a step with seconds set counts as done when a run resumes."""
        column = _STEP_COLUMN[step]
        self.db.execute(
            f"INSERT INTO rounds (run, round, {column}) VALUES (?, ?, ?) "
            f"ON CONFLICT (run, round) DO UPDATE SET {column} = excluded.{column}",
            [run, round, seconds],
        )

    def finish_round(
        self,
        run: str,
        round: int,
        *,
        wall_s: float,
        adapter_out: str | None,
        gate_decision: str,
        gate_reason: str | None = None,
    ) -> None:
        """Close a round: its wall time, the gate's decision ('promoted' | 'rejected') and the adapter carried on."""
        self.db.execute(
            "INSERT INTO rounds (run, round, status, wall_s, adapter_out, gate_decision, gate_reason) "
            "VALUES (?, ?, 'done', ?, ?, ?, ?) ON CONFLICT (run, round) DO UPDATE SET status = 'done', "
            "wall_s = excluded.wall_s, adapter_out = excluded.adapter_out, "
            "gate_decision = excluded.gate_decision, gate_reason = excluded.gate_reason",
            [run, round, wall_s, adapter_out, gate_decision, gate_reason],
        )

    def add_prompts(self, prompts: Iterable[Prompt]) -> int:
        return self._insert("prompts", [p.model_dump() for p in prompts], key=("prompt_id",))

    def add_responses(self, responses: Iterable[Response]) -> int:
        return self._insert("responses", [r.model_dump() for r in responses], key=("response_id",))

    def add_judgments(self, judgments: Iterable[Judgment]) -> int:
        """Store judgments and their spans; a stored 'failed' one is replaced by a new result, any other is
        kept as it is (a failed judgment has no spans, so spans are only ever added)."""
        judgments = list(judgments)
        self._insert(
            "judgment_spans",
            [{"response_id": j.response_id, "judge": j.judge, "span_index": index, **span.model_dump()}
             for j in judgments for index, span in enumerate(j.spans)],
            key=("response_id", "judge", "span_index"),
        )
        return self._insert(
            "judgments",
            [j.model_dump(exclude={"spans"}) for j in judgments],
            key=("response_id", "judge"),
            replace_where="judgments.verdict = 'failed'",
        )

    def stored_texts(self, response_ids: Sequence[str], judge: str) -> dict[str, tuple[str, str | None, str | None]]:
        """(response text, verdict, judgment by `judge`) of those of `response_ids` already stored."""
        rows = self.db.execute(
            "SELECT r.response_id, r.text, j.verdict, j.judgment FROM responses r "
            "LEFT JOIN judgments j ON j.response_id = r.response_id AND j.judge = ? "
            "WHERE r.response_id IN (SELECT unnest(?::VARCHAR[]))",
            [judge, list(response_ids)],
        ).fetchall()
        return {response_id: (text, verdict, judgment) for response_id, text, verdict, judgment in rows}

    def add_refinements(self, refinements: Iterable[Refinement]) -> int:
        """Store refinements; a stored one whose judging failed is replaced by a new try, any other is kept."""
        return self._insert(
            "refinements",
            [r.model_dump() for r in refinements],
            key=("run", "round", "response_id", "judge"),
            replace_where="refinements.verdict = 'failed'",
        )

    def add_judge_batch(self, batch: JudgeBatch) -> int:
        return self._insert("judge_batches", [batch.model_dump()], key=("batch_id",))

    def add_adapter(self, adapter: Adapter) -> int:
        return self._insert("adapters", [adapter.model_dump()], key=("adapter_id",))

    def add_adapter_check(self, check: AdapterCheck) -> int:
        return self._insert("adapter_checks", [check.model_dump()], key=("run", "round", "step", "adapter_id"))

    def set_adapter_status(self, adapter_id: str, status: AdapterStatus, reason: str | None = None) -> None:
        TypeAdapter(AdapterStatus).validate_python(status)
        updated = self.db.execute(
            "UPDATE adapters SET status = ?, status_reason = ? WHERE adapter_id = ?", [status, reason, adapter_id]
        ).fetchone()
        if not updated or updated[0] == 0:
            raise KeyError(f"no adapter {adapter_id!r} in the store")

    def move_live(self, run: str, adapter_id: str | None, reason: str, retired_reason: str) -> None:
        """Make `adapter_id` the run's one live adapter (None: the base model), retiring whichever is live now."""
        self.db.execute(
            "UPDATE adapters SET status = 'retired', status_reason = ? WHERE run = ? AND status = 'live' "
            "AND adapter_id IS DISTINCT FROM ?",
            [retired_reason, run, adapter_id],
        )
        if adapter_id is not None:
            self.set_adapter_status(adapter_id, "live", reason)

    def add_training_steps(self, steps: Iterable[TrainingStep]) -> int:
        return self._insert("training_steps", [s.model_dump() for s in steps], key=("run", "round", "step"))

    def add_flagged_tokens(self, tokens: Iterable[FlaggedToken]) -> int:
        return self._insert(
            "flagged_tokens", [t.model_dump() for t in tokens], key=("run", "round", "response_id", "token_index")
        )

    def add_detection(self, detection: Detection) -> int:
        return self._insert("detections", [detection.model_dump()], key=("run", "round"))

    def add_evaluations(self, evaluations: Iterable[Evaluation]) -> int:
        return self._insert("evaluations", [e.model_dump() for e in evaluations], key=("run", "round", "role", "suite"))

    def _insert(
        self, table: str, rows: list[dict[str, Any]], *, key: tuple[str, ...], replace_where: str | None = None
    ) -> int:
        """Insert rows column-wise (one statement per batch); returns the number of rows added or replaced."""
        first_of_key: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            first_of_key.setdefault(tuple(row[k] for k in key), row)
        unique = list(first_of_key.values())
        if not unique:
            return 0
        types = dict(
            self.db.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?", [table]
            ).fetchall()
        )
        columns = list(unique[0])
        quoted = [f'"{c}"' for c in columns]  # a column may be named for a keyword (judgment_spans.end)
        secrets = known_secrets()
        values = [[_stored_value(row[c], types[c], secrets) for row in unique] for c in columns]
        selects = ", ".join(f"unnest(?::{types[c]}[])" for c in columns)
        if replace_where is None:
            conflict = "DO NOTHING"
        else:
            updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
            conflict = f"DO UPDATE SET {updates} WHERE {replace_where}"
        added = self.db.execute(
            f"INSERT INTO {table} ({', '.join(quoted)}) SELECT {selects} ON CONFLICT ({', '.join(key)}) {conflict}",
            values,
        ).fetchone()
        return added[0] if added else 0


def _stored_value(value: Any, column_type: str, secrets: list[str]) -> Any:
    if column_type == "JSON":
        return None if value is None else json.dumps(redact_payload(value, secrets), ensure_ascii=False)
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value


class Store:
    """The DuckDB store at `path`. Writes happen here and only here; see the module doc."""

    def __init__(self, path: Path | str, *, lock_timeout_s: float = 30.0) -> None:
        """Nothing is opened yet: the first read or write creates the file and applies pending migrations."""
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self._migrated = False

    @classmethod
    def from_config(cls, config: StorageConfig) -> Store:
        return cls(config.db, lock_timeout_s=config.lock_timeout_s)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self.path.exists() and not self.path.is_file():
            # DuckDB would fail on a directory with a traceback and block forever on a FIFO.
            raise StoreError(f"{self.path}: not a regular file, so not a DuckDB store (pass --db the path of one)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(self.path, timeout_s=self.lock_timeout_s)
        if not self._migrated:
            try:
                apply_migrations(db)
            except BaseException:
                db.close()
                raise
            self._migrated = True
        return db

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction over several writes: committed when the block ends, rolled back if it raises."""
        db = self._connect()
        try:
            db.begin()
            try:
                yield Transaction(db)
                db.commit()
            except BaseException:
                db.rollback()
                raise
        finally:
            db.close()

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for reads, closed when the block ends; keep the block short."""
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    # Writes, each its own transaction. See `Transaction` for what each does.

    def add_run(self, run: str, *, source: str = "pipeline", config: dict[str, Any] | None = None) -> int:
        with self.transaction() as tx:
            return tx.add_run(run, source=source, config=config)

    def start_round(self, run: str, round: int, *, adapter_in: str | None = None) -> int:
        with self.transaction() as tx:
            return tx.start_round(run, round, adapter_in=adapter_in)

    def record_round_step(self, run: str, round: int, step: RoundStep, seconds: float) -> None:
        with self.transaction() as tx:
            tx.record_round_step(run, round, step, seconds)

    def finish_round(
        self, run: str, round: int, *, wall_s: float, adapter_out: str | None, gate_decision: str,
        gate_reason: str | None = None,
    ) -> None:
        with self.transaction() as tx:
            tx.finish_round(
                run, round, wall_s=wall_s, adapter_out=adapter_out, gate_decision=gate_decision, gate_reason=gate_reason
            )

    def add_prompts(self, prompts: Iterable[Prompt]) -> int:
        with self.transaction() as tx:
            return tx.add_prompts(prompts)

    def add_responses(self, responses: Iterable[Response]) -> int:
        with self.transaction() as tx:
            return tx.add_responses(responses)

    def add_judgments(self, judgments: Iterable[Judgment]) -> int:
        with self.transaction() as tx:
            return tx.add_judgments(judgments)

    def add_refinements(self, refinements: Iterable[Refinement]) -> int:
        with self.transaction() as tx:
            return tx.add_refinements(refinements)

    def add_judge_batch(self, batch: JudgeBatch) -> int:
        with self.transaction() as tx:
            return tx.add_judge_batch(batch)

    def update_judge_batch(self, batch: JudgeBatch) -> None:
        """Store how far a recorded batch got (status, counts, result files)."""
        with self.transaction() as tx:
            tx.db.execute(
                "UPDATE judge_batches SET status = ?, output_file_id = ?, error_file_id = ?, completed = ?, failed = ? "
                "WHERE batch_id = ?",
                [batch.status, batch.output_file_id, batch.error_file_id, batch.completed, batch.failed, batch.batch_id],
            )

    def judge_batches(self, judge: str, attempt: int) -> list[JudgeBatch]:
        """The judge's recorded batches of one attempt, oldest first."""
        rows = self.query(
            "SELECT * EXCLUDE (created_at) FROM judge_batches WHERE judge = ? AND attempt = ? ORDER BY created_at, batch_id",
            [judge, attempt],
        )
        return [JudgeBatch.model_validate(row) for row in rows]

    def add_adapter(self, adapter: Adapter) -> int:
        with self.transaction() as tx:
            return tx.add_adapter(adapter)

    def set_adapter_status(self, adapter_id: str, status: AdapterStatus, reason: str | None = None) -> None:
        with self.transaction() as tx:
            tx.set_adapter_status(adapter_id, status, reason)

    def add_training_steps(self, steps: Iterable[TrainingStep]) -> int:
        with self.transaction() as tx:
            return tx.add_training_steps(steps)

    def add_flagged_tokens(self, tokens: Iterable[FlaggedToken]) -> int:
        with self.transaction() as tx:
            return tx.add_flagged_tokens(tokens)

    def add_evaluations(self, evaluations: Iterable[Evaluation]) -> int:
        with self.transaction() as tx:
            return tx.add_evaluations(evaluations)

    # Reads, each on its own short connection.

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of any read query as dicts (JSON columns parsed), e.g. over `round_summary`."""
        with self.reading() as db:
            return _rows(db.execute(sql, list(params)))

    def triples(self, run: str | None = None, round: int | None = None) -> list[Triple]:
        """Judged triples (positive or negative), optionally of one run and round, in a stable order."""
        rows = self.query(
            "SELECT * FROM triples WHERE (? IS NULL OR run = ?) AND (? IS NULL OR round = ?) "
            "ORDER BY run, round, created_at, response_id",
            [run, run, round, round],
        )
        return [Triple.model_validate(row) for row in rows]

    def refinements(self, run: str, judge: str) -> list[Refinement]:
        """A run's refinements asked for by `judge`'s judgments, in a stable order."""
        rows = self.query(
            "SELECT * EXCLUDE (created_at, accepted) FROM refinements WHERE run = ? AND judge = ? "
            "ORDER BY round, response_id",
            [run, judge],
        )
        return [Refinement.model_validate(row) for row in rows]

    def responses(self, run: str, round: int) -> list[Response]:
        """The responses sampled (or imported) in a round, e.g. to judge those not judged yet."""
        rows = self.query(
            "SELECT * EXCLUDE (response_id, created_at) FROM responses WHERE run = ? AND round = ? "
            "ORDER BY prompt_id, sample_index",
            [run, round],
        )
        return [Response.model_validate(row) for row in rows]

    def cached_judgments(self, items: Sequence[tuple[str, str, str]], judge: str) -> list[Judgment | None]:
        """The first stored positive/negative judgment by `judge` of each exact (instruction, input, response), in
        any run, in one read; None where none is stored."""
        if not items:
            return []
        rows = self.query(
            """
            WITH wanted AS (
                SELECT unnest(?::INTEGER[]) AS item, unnest(?::VARCHAR[]) AS prompt_id, unnest(?::VARCHAR[]) AS text
            )
            SELECT w.item, j.* EXCLUDE (created_at), coalesce(t.spans, []) AS spans
            FROM wanted w
            JOIN responses r ON r.prompt_id = w.prompt_id AND r.text = w.text
            JOIN judgments j USING (response_id)
            JOIN triples t ON t.response_id = j.response_id AND t.judge = j.judge  -- positive or negative only
            WHERE j.judge = ?
            QUALIFY row_number() OVER (PARTITION BY w.item ORDER BY j.created_at, j.response_id) = 1
            """,
            [
                list(range(len(items))),
                [keys.prompt_id(instruction, input) for instruction, input, _ in items],
                [response for _, _, response in items],
                judge,
            ],
        )
        found: list[Judgment | None] = [None] * len(items)
        for row in rows:
            item = row.pop("item")
            found[item] = Judgment.model_validate(row)
        return found

    def round_state(self, run: str, round: int) -> RoundState | None:
        """The `rounds` row of a round, or None if it never started."""
        rows = self.query("SELECT * FROM rounds WHERE run = ? AND round = ?", [run, round])
        return RoundState.model_validate(rows[0]) if rows else None

    def adapters(self, run: str | None = None) -> list[Adapter]:
        """Adapters, oldest first, optionally of one run."""
        rows = self.query(
            "SELECT * EXCLUDE (created_at) FROM adapters WHERE ? IS NULL OR run = ? ORDER BY created_at, adapter_id",
            [run, run],
        )
        return [Adapter.model_validate(row) for row in rows]


def _rows(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in result.description]
    json_columns = {i for i, d in enumerate(result.description) if str(d[1]) == "JSON"}
    return [
        {
            name: json.loads(value) if i in json_columns and value is not None else value
            for i, (name, value) in enumerate(zip(names, row))
        }
        for row in result.fetchall()
    ]
