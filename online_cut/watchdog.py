"""Children end with the process that started them, also when it is SIGKILLed.

vLLM's engine processes, Prefect's temporary server and `accelerate launch` workers outlive a
parent that is killed without a chance to clean up, and two CPU engines on the same cores slow
each other to a crawl. `guard_children()` starts a watchdog process that notes the parent's
descendants every second and, once the parent has exited, ends those still running (after a
clean exit normally none: the engine and Prefect's server have been stopped by then). With a `record` file (one per store) it also writes them down, so a run that
finds a record whose owner is dead ends what is left (`end_leftovers`), should the watchdog
itself have been killed too.

    python -m online_cut.watchdog PARENT_PID [RECORD]     (started by guard_children)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_S = 1.0
TERM_GRACE_S = 3.0

_watchdog: subprocess.Popen | None = None


def guard_children(record: Path | None = None) -> None:
    """Start this process's watchdog (once per process)."""
    global _watchdog
    if _watchdog is not None and _watchdog.poll() is None:
        return
    if record is not None:  # a first run: its store's folder is not made yet
        record.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "online_cut.watchdog", str(os.getpid()), *([str(record)] if record else [])]
    # Its own session: a signal sent to the run's process group does not end the watchdog before its work.
    _watchdog = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)


def guard_store_children(db: Path) -> list[str]:
    """End what a killed run on the store `db` left running, then guard this run's children under
    a record beside the store; returns what was ended."""
    record = db.with_name(f"{db.name}.children.json")
    ended = end_leftovers(record)
    guard_children(record)
    return ended


def end_leftovers(record: Path) -> list[str]:
    """End the processes a record names when its owner is dead; returns what was ended, as `pid (command)`."""
    try:
        noted = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    if _alive(noted["owner"]) is not None:
        return []  # its run is still going
    ended = []
    for entry in noted["processes"]:
        process = _alive(entry)
        if process is not None:
            ended.append(f"{entry['pid']} ({' '.join(entry['command'])[:120]})")
            _end([process])
    record.unlink(missing_ok=True)
    return ended


def _alive(entry: dict) -> psutil.Process | None:
    """The process an entry names, if it still runs (the same pid with the same start time)."""
    try:
        process = psutil.Process(entry["pid"])
        return process if process.create_time() == entry["created"] else None
    except psutil.Error:
        return None


def _entry(process: psutil.Process) -> dict:
    with process.oneshot():
        return {"pid": process.pid, "created": process.create_time(), "command": process.cmdline()}


def _end(processes: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL for those still there after a grace period; descendants included."""
    everyone = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            everyone += [process, *process.children(recursive=True)]
    for process in everyone:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, still = psutil.wait_procs(everyone, timeout=TERM_GRACE_S)
    for process in still:
        with contextlib.suppress(psutil.Error):
            process.kill()


def watch(parent_pid: int, record: Path | None) -> None:
    """Note the parent's descendants until it has exited, then end those still running."""
    parent = psutil.Process(parent_pid)
    owner = _entry(parent)
    noted: list[dict] = []
    while True:
        try:
            if parent.status() == psutil.STATUS_ZOMBIE:
                break
            children = parent.children(recursive=True)
        except psutil.Error:
            break
        current = []
        for child in children:
            if child.pid != os.getpid():
                with contextlib.suppress(psutil.Error):  # it ended while being listed
                    current.append(_entry(child))
        # Those noted before and still running stay noted: a child the parent's death has just
        # handed to init is no longer its descendant, but must still end.
        current += [e for e in noted if e not in current and _alive(e) is not None]
        if current != noted:
            noted = current
            if record is not None:
                _write(record, {"owner": owner, "processes": noted})
        time.sleep(SNAPSHOT_EVERY_S)
    _end([p for p in map(_alive, noted) if p is not None])
    if record is not None:
        record.unlink(missing_ok=True)


def _write(record: Path, noted: dict) -> None:
    partial = record.with_name(f".{record.name}.partial")
    partial.write_text(json.dumps(noted))
    os.replace(partial, record)


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
