"""What a run checks before it continues from the store: the config it was started with, and the
adapter folders its next step reads.

A run started again under its name continues from its first unfinished step; these checks stop
it first, writing nothing, where the store no longer fits the config file or what is on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cut.fingerprint import read_fingerprint
from online_cut.config import Config
from rounds.context import RunContext
from samplers.adapters import AdapterError, inspect_adapter
from storage import records
from storage.redact import known_secrets, redact_payload
from storage.store import Store

# A run may be continued for more rounds than it was started with.
MAY_CHANGE = frozenset({"rounds"})
SHOWN_CHANGES = 5


class ResumeError(RuntimeError):
    """The run cannot continue as it is; the message names what is wrong and what to do."""


def open_run(config: Config, run: str, store: Store) -> RunContext:
    """The run's context: recorded with its config if new, else checked against what it was started with."""
    if check_resume(config, run, store):
        store.add_run(run, config=_recorded(config))
    return RunContext(config, run, store)


def check_resume(config: Config, run: str, store: Store) -> bool:
    """Raise `ResumeError` where the run cannot continue as it is; True for a run the store does not know."""
    rows = store.query("SELECT config FROM runs WHERE run = ?", [run])
    if not rows:
        return True
    stored = rows[0]["config"]
    changed = config_changes(stored, _recorded(config)) if stored else []
    if changed:
        shown = "; ".join(changed[:SHOWN_CHANGES]) + (f"; and {len(changed) - SHOWN_CHANGES} more"
                                                       if len(changed) > SHOWN_CHANGES else "")
        raise ResumeError(
            f"run {run!r} was started with another config ({shown}): continue it with the config it was "
            f"started with (`online-cut sql \"SELECT config FROM runs WHERE run = '{run}'\"` shows it), or start "
            "a new run under another name"
        )
    ctx = RunContext(config, run, store)
    for adapter, role in adapters_read_next(ctx):
        problem = adapter_problem(adapter)
        if problem is not None:
            raise ResumeError(
                f"run {run!r}: {role} adapter {adapter.adapter_id!r} at {adapter.path} {problem}: restore the "
                f"folder{' (storage.mirror has a copy)' if config.storage.mirror else ''}, "
                + (f"or make its parent live with `online-cut adapters rollback {run}`, then run again"
                   if role == "live" else "or start a new run under another name")
            )
    return False


def _recorded(config: Config) -> dict[str, Any]:
    """The config as the store records it: JSON, secrets removed."""
    return redact_payload(config.model_dump(mode="json"), known_secrets())


def config_changes(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """`section.key: stored → current` for every setting that differs; a key the stored config lacks
    (added to the schema since the run started) is not a change."""
    changes = []
    for key, value in current.items():
        name = f"{prefix}{key}"
        if key not in stored or name in MAY_CHANGE:
            continue
        if isinstance(value, dict) and isinstance(stored[key], dict):
            changes += config_changes(stored[key], value, f"{name}.")
        elif stored[key] != value:
            changes.append(f"{name}: {stored[key]!r} → {value!r}")
    return changes


def adapters_read_next(ctx: RunContext) -> list[tuple[records.Adapter, str]]:
    """The live adapter (the next round samples and trains from it) and the candidate of a round
    trained but not yet through the gate (it is evaluated next)."""
    found = []
    live = ctx.live_adapter()
    if live is not None:
        found.append((live, "live"))
    for adapter in ctx.store.adapters(ctx.run):
        state = ctx.store.round_state(ctx.run, adapter.round)
        if adapter.status == "candidate" and state is not None and state.gate_decision is None:
            found.append((adapter, "candidate"))
    return found


def adapter_problem(adapter: records.Adapter) -> str | None:
    """What is wrong with the adapter's folder, or None when it loads and holds the adapter the store names."""
    folder = Path(adapter.path)
    if not folder.is_dir():
        return "is gone"
    try:
        inspect_adapter(folder)
    except AdapterError as exc:
        return f"cannot be loaded ({exc})"
    written = read_fingerprint(folder)
    if adapter.fingerprint is not None and (written is None or written.as_dict() != adapter.fingerprint):
        return "holds another adapter than the one the store recorded (its fingerprint.json differs)"
    return None
