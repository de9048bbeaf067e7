"""A killed run leaves nothing running: its watchdog ends the children (and theirs) once it is gone,
and a record left by a run whose watchdog died too is ended by the next run on the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from online_cut.watchdog import end_leftovers

REPO = Path(__file__).resolve().parents[2]

# Guards its children, starts a child and a child with a grandchild, prints their pids, then waits.
PARENT = """
import subprocess, sys, time
from pathlib import Path
from online_cut.watchdog import guard_children
guard_children(Path(sys.argv[1]))
alone = subprocess.Popen(["sleep", "300"])
shell = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
print(alone.pid, shell.pid, shell.stdout.readline().strip(), flush=True)
time.sleep(300)
"""


def _wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_children_and_grandchildren_end_when_their_parent_is_sigkilled(tmp_path: Path) -> None:
    record = tmp_path / "not-made-yet" / "store.duckdb.children.json"  # a first run's store folder
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(record)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert all(map(_running, pids))
    assert _wait_until(lambda: record.is_file() and {p["pid"] for p in json.loads(record.read_text())["processes"]}
                       >= set(pids), 10), "the watchdog did not note the children"

    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert _wait_until(lambda: not any(map(_running, pids)), 15), \
        f"left running: {[pid for pid in pids if _running(pid)]}"
    assert _wait_until(lambda: not record.exists(), 5)


def test_a_record_whose_owner_is_dead_has_its_processes_ended_by_the_next_run(tmp_path: Path) -> None:
    leftover = subprocess.Popen(["sleep", "300"])
    process = psutil.Process(leftover.pid)
    record = tmp_path / "store.duckdb.children.json"
    entry = {"pid": leftover.pid, "created": process.create_time(), "command": ["sleep", "300"]}
    record.write_text(json.dumps({"owner": {"pid": leftover.pid, "created": 0.0, "command": []}, "processes": [entry]}))

    assert end_leftovers(record) == [f"{leftover.pid} (sleep 300)"]
    assert not _running(leftover.pid)
    assert not record.exists()


def test_a_record_whose_owner_still_runs_is_left_alone(tmp_path: Path) -> None:
    running = subprocess.Popen(["sleep", "300"])
    try:
        created = psutil.Process(running.pid).create_time()
        record = tmp_path / "store.duckdb.children.json"
        entry = {"pid": running.pid, "created": created, "command": ["sleep", "300"]}
        record.write_text(json.dumps({"owner": entry, "processes": [entry]}))
        assert end_leftovers(record) == []
        assert running.poll() is None and record.exists()
    finally:
        running.kill()
        running.wait()
