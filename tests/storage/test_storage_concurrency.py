"""A reader and a writer in two processes: the file stays whole, the reader gets data or a
clear message, a second writer waits a bounded time and then names the lock's holder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ONLINE_CUT = [sys.executable, "-m", "online_cut.cli"]

# Holds a write transaction open (as the pipeline does during a write) until told to stop.
HOLD_LOCK = """
import sys, time
from pathlib import Path
from storage.records import Prompt
from storage.store import Store

db, release = Path(sys.argv[1]), Path(sys.argv[2])
with Store(db).transaction() as tx:
    tx.add_prompts([Prompt(instruction="written while others wait")])
    print("holding", flush=True)
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ONLINE_CUT, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def exported_store(tmp_path_factory: pytest.TempPathFactory, cut_paper_iter1: Path) -> tuple[Path, Path]:
    """A store with the CUT paper's triples and its Parquet export."""
    folder = tmp_path_factory.mktemp("exported-store")
    db, exports = folder / "store.duckdb", folder / "exports"
    assert run("import", cut_paper_iter1, "--db", db).returncode == 0
    assert run("export", "--db", db, "--format", "parquet", "--out", exports).returncode == 0
    return db, exports


@pytest.fixture
def holder(tmp_path: Path, exported_store: tuple[Path, Path]):
    """A copy of the exported store, and a process holding its lock."""
    db, exports = tmp_path / "store.duckdb", exported_store[1]
    shutil.copyfile(exported_store[0], db)
    release = tmp_path / "release"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db), str(release)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "holding"
    yield process, db, exports, release
    release.touch()
    process.wait(timeout=30)


def test_reader_uses_the_exports_while_the_writer_holds_the_store(holder):
    process, db, exports, _ = holder
    result = run("sql", "SELECT count(*) AS n FROM triples", "--db", db, "--exports", exports, "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "n\n1000\n"
    assert f"locked by PID {process.pid}" in result.stderr and "Parquet exports" in result.stderr
    assert "Traceback" not in result.stderr


def test_reader_without_exports_says_why_it_cannot_read(holder, tmp_path: Path):
    process, db, _, _ = holder
    result = run("sql", "SELECT count(*) FROM triples", "--db", db, "--exports", tmp_path / "no-exports")
    assert result.returncode != 0
    assert f"locked by PID {process.pid}" in result.stderr and "no Parquet export" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_writer_gives_up_naming_the_holder_then_succeeds_once_released(holder, tmp_path: Path):
    process, db, _, release = holder
    more = tmp_path / "more.jsonl"
    more.write_text('{"instruction": "Add 1 and 1.", "output": "2", "judgment": null}\n')

    refused = run("import", more, "--db", db, "--wait", "1")
    assert refused.returncode != 0
    assert f"locked by another process: PID {process.pid}" in refused.stderr and "nothing was imported" in refused.stderr
    assert "Traceback" not in refused.stderr

    waiting = subprocess.Popen([*ONLINE_CUT, "import", str(more), "--db", str(db), "--wait", "30"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    release.touch()
    assert process.wait(timeout=30) == 0
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "added 1 triples" in out

    # Both writers' data is there and the file reads cleanly.
    result = run("sql", "SELECT (SELECT count(*) FROM triples) AS triples, "
                        "(SELECT count(*) FROM prompts WHERE instruction = 'written while others wait') AS held",
                 "--db", db, "--format", "csv")
    assert result.stdout == "triples,held\n1001,1\n" and result.stderr == ""
