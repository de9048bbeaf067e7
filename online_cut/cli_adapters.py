"""`online-cut adapters list | promote | rollback`: a run's adapter lineage and its live pointer."""

from __future__ import annotations

from pathlib import Path

import typer

from online_cut.cli_store import DB_HELP, TableFormat, print_rows, storage_defaults
from online_cut.console import fail

adapters_app = typer.Typer(
    help="Show each run's adapter lineage and move its live pointer (the adapter the next round starts from).",
    no_args_is_help=True,
)


def _store(db: Path | None):
    from storage.store import Store

    defaults = storage_defaults()
    return Store(db or defaults.db, lock_timeout_s=defaults.lock_timeout_s)


@adapters_app.command("list")
def list_command(
    run: str = typer.Option(None, "--run", help="only this run's adapters"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    format: TableFormat = typer.Option(TableFormat.table, "--format", help="table (readable), csv or json"),
) -> None:
    """Adapters with round, parent, status (live, candidate, rejected, retired), held-out score and why."""
    from online_cut.lineage import lineage

    rows = lineage(_store(db), run)
    if not rows:
        raise fail(f"no adapters{f' in run {run!r}' if run else ''} in {db or storage_defaults().db}")
    columns = list(rows[0])
    print_rows(columns, [tuple(row[c] for c in columns) for row in rows], format)


@adapters_app.command("promote")
def promote_command(
    adapter_id: str = typer.Argument(..., help="the adapter to make live, as `adapters list` shows it"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Make an adapter its run's live one; the next round samples from it. Refuses a folder that fails to load."""
    from online_cut.lineage import LineageError, promote

    try:
        replaced = promote(_store(db), adapter_id)
    except LineageError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{adapter_id} is live (was: {replaced.adapter_id if replaced else 'the base model'})")


@adapters_app.command("rollback")
def rollback_command(
    run: str = typer.Argument(..., help="the run whose live adapter to retire"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Retire a run's live adapter and make its parent live again (or the base model, for the first)."""
    from online_cut.lineage import LineageError, rollback

    try:
        restored = rollback(_store(db), run)
    except LineageError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"run {run}: live is now {restored.adapter_id if restored else 'the base model'}")
