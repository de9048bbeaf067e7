"""`online-cut adapters list | promote | rollback | verify`: a run's adapter lineage, its live pointer,
and whether a sampler serves an adapter's weights."""

from __future__ import annotations

from pathlib import Path

import typer

from online_cut.cli.store import DB_HELP, TableFormat, print_rows, storage_defaults
from online_cut.cli.output import errors_named, fail

adapters_app = typer.Typer(
    help="Show each run's adapter lineage and move its live pointer (the adapter the next round starts from).",
    no_args_is_help=True,
)


def _store(db: Path | None):
    from storage.store import Store

    defaults = storage_defaults()
    return Store(db or defaults.db, lock_timeout_s=defaults.lock_timeout_s)


def _store_errors():
    """What a bad --db, a locked store or a refused pointer move raise: each a named error, exit 1."""
    from rounds.lineage import LineageError
    from storage.connection import StoreLocked
    from storage.store import StoreError

    return errors_named(LineageError, StoreError, StoreLocked)


@adapters_app.command("list")
def list_command(
    run: str = typer.Option(None, "--run", help="only this run's adapters"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    format: TableFormat = typer.Option(TableFormat.table, "--format", help="table (readable), csv or json"),
) -> None:
    """Adapters with round, parent, status (live, candidate, rejected, retired), held-out score and why."""
    from rounds.lineage import lineage

    with _store_errors():
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
    """Make an adapter its run's live one; the next round samples from it.

    Refuses a folder that fails to load or does not fit the run's base model (target modules, shapes, rank).
    """
    from rounds.lineage import promote

    with _store_errors():
        replaced = promote(_store(db), adapter_id)
    typer.echo(f"{adapter_id} is live (was: {replaced.adapter_id if replaced else 'the base model'})")


@adapters_app.command("rollback")
def rollback_command(
    run: str = typer.Argument(..., help="the run whose live adapter to retire"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Retire a run's live adapter and make its parent live again (or the base model, for the first)."""
    from rounds.lineage import rollback

    with _store_errors():
        restored = rollback(_store(db), run)
    typer.echo(f"run {run}: live is now {restored.adapter_id if restored else 'the base model'}")


@adapters_app.command("verify")
def verify_command(
    run: str = typer.Argument(..., help="the run whose adapter to check"),
    adapter_id: str = typer.Argument(None, help="the adapter, as `adapters list` shows it (default: the run's live one)"),
    config: Path = typer.Option(
        None, "--config", help="a YAML config whose model and sampler sections to use (default: the run's stored config)"
    ),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Check that the sampler serves the adapter the trainer wrote: attach it, score its fingerprint's probe
    tokens and compare with the trainer's log-probs and its parent's, against the engine's noise
    measured on the base model. Exit 1 when the engine does not serve this adapter."""
    from online_cut.config import ConfigError, load_config
    from rounds.lineage import adapter_to_verify, run_config, stored_fingerprint
    from samplers.adapters import AdapterError
    from samplers.base import SamplerError
    from samplers.factory import open_sampler

    with _store_errors(), errors_named(ConfigError):
        store = _store(db)
        adapter = adapter_to_verify(store, run, adapter_id)
        settings = run_config(store, run) if config is None else load_config(config)
    model = settings.model
    with errors_named(AdapterError, SamplerError):
        with open_sampler(settings.sampler, model.name_or_path(), dtype=model.dtype,
                          max_model_len=model.max_model_len) as sampler:
            check = sampler.attach(Path(adapter.path), name=adapter.adapter_id, fingerprint=stored_fingerprint(adapter))
    if check.fingerprint is None:
        raise fail(f"adapter {adapter.adapter_id!r} has no fingerprint (written before fingerprints, or imported): "
                   "only its change from the base model was checked")
    found = check.fingerprint
    noise = "measured" if found.noise_measured else "assumed"
    typer.echo(
        f"{adapter.adapter_id}: {check.backend} ({check.precision}) serves it ({found.verdict}): mean |Δ log p| "
        f"{found.adapter.mean_abs:.3g} from the trainer's over {found.adapter.tokens} probe tokens, "
        f"{found.against_parent()}; engine noise {found.noise.mean_abs:.3g} ({noise}), tolerance {found.tolerance:.3g}"
    )
