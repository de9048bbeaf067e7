"""The adapters of a run as a lineage, and the live pointer moved by hand.

Exactly one adapter of a run is `live` (or none: the base model); the next round samples
from it and trains from it. The gate moves the pointer forward each round; `promote` and
`rollback` move it by hand, and refuse an adapter folder that fails to load or does not fit
the run's base model. `verify` finds what the fingerprint check needs: the adapter, the
fingerprint the trainer wrote for it, the run's config.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from cut.fingerprint import Fingerprint
from online_cut.config import Config, ConfigError, ModelConfig, parse_config
from samplers.adapters import ADAPTER_CONFIG, AdapterError, check_fits_base, inspect_adapter
from storage import records
from storage.store import Store


class LineageError(ValueError):
    """A pointer move that cannot be made; the message names the adapter or run at fault."""


def live_adapter(store: Store, run: str) -> records.Adapter | None:
    """The adapter the run's next round samples from (None: the base model)."""
    live = [a for a in store.adapters(run) if a.status == "live"]
    return max(live, key=lambda a: a.round) if live else None


def lineage(store: Store, run: str | None = None) -> list[dict]:
    """Every adapter (of one run) with its parent, round, status and held-out scores as candidate."""
    return store.query(
        """
        SELECT a.run, a.round, a.adapter_id, coalesce(a.parent_id, '(base)') AS parent, a.status,
               (SELECT round(avg(e.score), 3) FROM evaluations e
                 WHERE e.adapter_id = a.adapter_id AND e.role = 'candidate') AS score,
               a.status_reason AS reason, a.path
        FROM adapters a WHERE ? IS NULL OR a.run = ? ORDER BY a.run, a.round
        """,
        [run, run],
    )


def stored_fingerprint(adapter: records.Adapter) -> Fingerprint | None:
    """The fingerprint the store holds for the adapter (None: written without one; the folder's is then used)."""
    return Fingerprint.from_dict(adapter.fingerprint) if adapter.fingerprint else None


def adapter_to_verify(store: Store, run: str, adapter_id: str | None) -> records.Adapter:
    """`adapter_id` of `run`, or the run's live adapter."""
    if adapter_id is None:
        live = live_adapter(store, run)
        if live is None:
            raise LineageError(f"run {run!r} has no live adapter: name the adapter to verify (see `online-cut adapters list`)")
        return live
    adapter = _find(store, adapter_id)
    if adapter.run != run:
        raise LineageError(f"adapter {adapter_id!r} belongs to run {adapter.run!r}, not {run!r}")
    return adapter


def run_config(store: Store, run: str) -> Config:
    """The config a run was started with, as the store holds it."""
    rows = store.query("SELECT config FROM runs WHERE run = ?", [run])
    if not rows or not rows[0]["config"]:
        raise LineageError(f"run {run!r} has no stored config (imported?): pass --config")
    try:
        return parse_config(rows[0]["config"], f"run {run!r}'s stored config")
    except ConfigError as exc:
        raise LineageError(str(exc)) from None


def _find(store: Store, adapter_id: str) -> records.Adapter:
    found = [a for a in store.adapters() if a.adapter_id == adapter_id]
    if not found:
        raise LineageError(f"no adapter {adapter_id!r} in {store.path} (see `online-cut adapters list`)")
    return found[0]


def _base_model(store: Store, adapter: records.Adapter) -> str:
    """The base model of the adapter's run, from the run's stored config; an imported run has none,
    so the adapter's own `base_model_name_or_path` stands in."""
    rows = store.query("SELECT config FROM runs WHERE run = ?", [adapter.run])
    config = rows[0]["config"] if rows else None
    if config and "model" in config:
        try:
            return ModelConfig.model_validate(config["model"]).name_or_path()
        except ValidationError as exc:
            raise LineageError(f"run {adapter.run!r}: its base model cannot be found to check adapter "
                               f"{adapter.adapter_id!r} against: {exc.errors()[0]['msg']}") from None
    return json.loads((Path(adapter.path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path") or ""


def _check_loads(store: Store, adapter: records.Adapter) -> None:
    try:
        inspect_adapter(Path(adapter.path))
        check_fits_base(Path(adapter.path), _base_model(store, adapter))
    except AdapterError as exc:
        raise LineageError(f"adapter {adapter.adapter_id!r} cannot be made live: {exc}") from None


def promote(store: Store, adapter_id: str, reason: str = "promoted by hand") -> records.Adapter | None:
    """Make `adapter_id` its run's live adapter; returns the adapter it replaced."""
    adapter = _find(store, adapter_id)
    _check_loads(store, adapter)
    current = live_adapter(store, adapter.run)
    if current is not None and current.adapter_id == adapter_id:
        raise LineageError(f"adapter {adapter_id!r} is already live in run {adapter.run!r}")
    with store.transaction() as tx:
        tx.move_live(adapter.run, adapter_id, reason, f"replaced by {adapter_id} ({reason})")
    return current


def rollback(store: Store, run: str) -> records.Adapter | None:
    """Retire the run's live adapter and make its parent live again; returns the new live adapter (None: base)."""
    current = live_adapter(store, run)
    if current is None:
        known = {a.run for a in store.adapters()}
        where = "has no live adapter: it already samples from the base model" if run in known else "has no adapters"
        raise LineageError(f"run {run!r} {where}")
    parent = _find(store, current.parent_id) if current.parent_id else None
    if parent is not None:
        _check_loads(store, parent)
    with store.transaction() as tx:
        tx.move_live(run, parent.adapter_id if parent else None, f"restored by rolling back {current.adapter_id}",
                     "rolled back by hand")
    return parent
