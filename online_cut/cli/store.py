"""`online-cut import | export | sql`: move triples in and out of the store and query it."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from online_cut.cli.output import fail

if TYPE_CHECKING:
    from rich.text import Text

store_app = typer.Typer()

DB_HELP = "the DuckDB store (default: storage.db of the config, .online-cut/store.duckdb)"
WAIT_HELP = "seconds to wait while another process holds the store (default: storage.lock_timeout_s, 30)"


# Below this many characters per column a table is unreadable; rows are printed one per block instead.
MIN_COLUMN_WIDTH = 9


class ExportFormat(str, Enum):
    parquet = "parquet"
    json = "json"
    jsonl = "jsonl"
    cut = "cut"
    chat = "chat"
    kto = "kto"
    dpo = "dpo"
    critique = "critique"


EXPORT_FORMAT_HELP = (
    "parquet: one file per run and round under a folder; json/jsonl: the CUT paper's format. One file, .jsonl or "
    ".parquet by --out: cut (the paper's fields), chat (messages: user, assistant; TRL's SFT), kto (prompt, "
    "completion, label), dpo (prompt, chosen, rejected: the dpo objective's pairs), critique (instruction, input, "
    "response, judgment, verdict, score)"
)


class TableFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def storage_defaults():
    from storage.config import StorageConfig

    return StorageConfig()


def read_store(sql: str, db: Path | None, storage=None, params: Sequence[Any] = (), what: str = ""):
    """The `QueryResult` of a read-only query on the store `db` (default: `storage.db`), through `online-cut sql`'s
    path and the limits of `storage` (default: the storage section's defaults); a problem fails the command,
    its message after `what`."""
    from storage.sql import QueryFailed, QueryRefused, StoreUnavailable, run_query

    storage = storage or storage_defaults()
    try:
        return run_query(sql, db or storage.db, storage.exports_dir, wait_s=storage.reader_wait_s,
                         timeout_s=storage.sql_timeout_s, memory_limit=storage.sql_memory_limit, params=params)
    except (QueryRefused, QueryFailed, StoreUnavailable) as exc:
        raise fail(f"{what}{exc}") from None


@store_app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="CUT triples: a .json list, .jsonl or .parquet of id, instruction, input, output, judgment"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    run: str = typer.Option(None, "--run", help="the run to import into (default: the file name without suffix)"),
    round: int = typer.Option(0, "--round", min=0, max=2**31 - 1, help="the round the triples belong to"),
    wait: float = typer.Option(None, "--wait", min=0, help=WAIT_HELP),
) -> None:
    """Import judged triples as a round of a run; all or nothing, and importing again adds nothing."""
    from storage.connection import StoreLocked
    from formats.triple_file import CutFormatError
    from storage.importer import import_file
    from storage.store import Store

    defaults = storage_defaults()
    try:
        store = Store(db or defaults.db, lock_timeout_s=defaults.lock_timeout_s if wait is None else wait)
        summary = import_file(store, file, run, round)
    except (CutFormatError, StoreLocked, ValueError) as exc:  # ImportConflict and StoreError among them
        raise fail(f"{exc}\nnothing was imported") from None
    typer.echo(
        f"{file}: read {summary.read} records; added {summary.added} triples to run {summary.run!r} round {summary.round}; "
        f"{summary.skipped} were already stored"
    )


@store_app.command("export")
def export_command(
    format: ExportFormat = typer.Option(..., "--format", help=EXPORT_FORMAT_HELP),
    out: Path = typer.Option(None, "--out", help="a folder for parquet (default: storage.exports_dir), else a file"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    run: str = typer.Option(None, "--run", help="only this run"),
    round: int = typer.Option(None, "--round", help="only this round"),
    judge: str = typer.Option(None, "--judge", help="only this judge's triples (as the triples view names it)"),
    seed: int = typer.Option(None, "--seed", help="dpo: the pairing's seed (default: cut.seed, as the objective pairs)"),
    wait: float = typer.Option(None, "--wait", min=0, help=WAIT_HELP),
) -> None:
    """Export judged triples from the store, each file written whole or not at all."""
    from storage.connection import StoreLocked
    from storage.store import Store

    defaults = storage_defaults()
    db = db or defaults.db
    if not db.is_file():
        raise fail(f"no store at {db}: run `online-cut import FILE` or the pipeline first, or pass --db")
    if format is not ExportFormat.parquet and out is None:
        raise fail(f"--out FILE is required with --format {format.value}")
    try:
        store = Store(db, lock_timeout_s=defaults.lock_timeout_s if wait is None else wait)
        count, where = _export(format, store, out or defaults.exports_dir, run=run, round=round, judge=judge, seed=seed)
    except (StoreLocked, ValueError) as exc:
        raise fail(str(exc)) from None
    if count == 0 and format is ExportFormat.dpo:
        raise fail("no preference pair among the matching triples (a pair needs two responses to one prompt with "
                   "different verdicts or scores); nothing was exported")
    if count == 0:
        raise fail("no judged triples match; nothing was exported")
    typer.echo(f"wrote {count} {'pairs' if format is ExportFormat.dpo else 'triples'} to {where}")


def _export(format: ExportFormat, store, out: Path, *, seed: int | None, **where) -> tuple[int, str]:
    """Write the export; returns how many records and where they went."""
    from formats.triple_file import write_records
    from storage import exporter

    if format is ExportFormat.parquet:
        exported = exporter.export_parquet(store, out, **where)
        return sum(e.triples for e in exported), f"{len(exported)} files under {out}"
    if format in (ExportFormat.json, ExportFormat.jsonl):
        return exporter.export_cut(store, out, jsonl=format is ExportFormat.jsonl, **where), str(out)
    if out.suffix.lower() not in exporter.SHAPE_SUFFIXES:
        raise ValueError(f"--out {out}: --format {format.value} writes a .jsonl or .parquet file")
    if format is ExportFormat.cut:
        records = exporter.cut_records(store, **where)
    else:
        triples = [t for t in store.triples(where["run"], where["round"]) if where["judge"] in (None, t.judge)]
        if format is ExportFormat.dpo:
            records = [exporter.pair_record(triples[c], triples[r]) for c, r in _dpo_pairs(triples, seed)]
        else:
            records = [exporter.shaped_record(format.value, t) for t in triples]
    if records:
        write_records(out, records, format=out.suffix.lower().lstrip("."))
    return len(records), str(out)


def _dpo_pairs(triples, seed: int | None) -> list[tuple[int, int]]:
    """The pairs the dpo objective trains on for these triples (cut/pairs.py), as indices."""
    from cut.config import CutConfig
    from cut.data import Triple
    from cut.pairs import preference_pairs

    as_trained = [Triple.judged(t.instruction, t.input, t.response, t.verdict, t.judgment, t.score) for t in triples]
    return preference_pairs(as_trained, CutConfig().seed if seed is None else seed)


@store_app.command("sql")
def sql_command(
    query: str = typer.Argument(..., help='a read-only query, e.g. "SELECT round, verdict, count(*) FROM triples GROUP BY ALL"'),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    format: TableFormat = typer.Option(TableFormat.table, "--format", help="table (readable), csv or json"),
    exports: Path = typer.Option(None, "--exports", help="Parquet exports to read while a writer holds the store (default: storage.exports_dir)"),
    timeout: float = typer.Option(
        None, "--timeout", min=0.001, help="seconds before the query is interrupted (default: storage.sql_timeout_s, 20)"
    ),
    memory_limit: str = typer.Option(
        None, "--memory-limit", help="the most memory the query may use, e.g. 4GB (default: storage.sql_memory_limit, 2GB)"
    ),
) -> None:
    """Query the store read-only: views triples and round_summary, and every table (see docs/sql.md).

    Only reads run: SELECT, SHOW, DESCRIBE, SUMMARIZE and EXPLAIN of a SELECT. The query cannot write, read
    files outside the store, or install extensions, and it is interrupted after --timeout seconds, so it
    never keeps the pipeline from writing for long.
    """
    from online_cut.cli.output import as_text, err
    from storage.sql import QueryFailed, QueryRefused, StoreUnavailable, run_query

    defaults = storage_defaults()
    if memory_limit is not None:
        try:
            defaults.sql_memory_limit = memory_limit
        except ValueError:
            raise fail(f"--memory-limit {memory_limit!r}: expected a size such as 512MB or 4GB") from None
    try:
        result = run_query(
            query,
            db or defaults.db,
            exports or defaults.exports_dir,
            wait_s=defaults.reader_wait_s,
            timeout_s=timeout or defaults.sql_timeout_s,
            memory_limit=defaults.sql_memory_limit,
        )
    except (QueryRefused, QueryFailed, StoreUnavailable) as exc:
        raise fail(str(exc)) from None
    if result.note:
        err.print(f"[yellow]note:[/] {as_text(result.note)}", highlight=False, soft_wrap=True)
    print_rows(result.columns, result.rows, format)


def print_rows(columns: list[str], rows: list[tuple[Any, ...]], format: TableFormat) -> None:
    """Rows as a table, CSV or JSON; stored text prints as the characters it holds (see `online_cut.cli.output`)."""
    from online_cut.cli.output import visible, visible_json

    if format is TableFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([visible(c) for c in columns])
        writer.writerows([visible(v) if isinstance(v, str) else v for v in row] for row in rows)
    elif format is TableFormat.json:
        text = json.dumps([dict(zip(columns, row)) for row in rows], ensure_ascii=False, indent=2, default=str)
        typer.echo(visible_json(text))
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console()
        headers = [Text(visible(c)) for c in columns]
        if len(columns) * MIN_COLUMN_WIDTH <= console.width:
            table = Table(caption=f"{len(rows)} rows")
            for header in headers:
                table.add_column(header)
            for row in rows:
                table.add_row(*(_cell(value) for value in row))
            console.print(table)
            return
        # Too many columns side by side: one block of `column  value` lines per row, like psql's \x.
        for number, row in enumerate(rows, start=1):
            table = Table(show_header=False, title=f"row {number}", title_justify="left", box=None)
            for header, value in zip(headers, row):
                table.add_row(Text(header.plain, style="bold"), _cell(value))
            console.print(table)
        console.print(f"{len(rows)} rows")


def _cell(value: Any) -> Text:
    from rich.text import Text

    from online_cut.cli.output import visible

    if value is None:
        return Text("NULL")
    if isinstance(value, float):
        return Text(f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}".rstrip("0").rstrip("."))
    return Text(visible(str(value)))
