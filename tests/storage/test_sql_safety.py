"""`online-cut sql` only reads the store: it cannot write, reach outside, outlast its time limit,
or let stored text act as markup or terminal control."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from online_cut.cli import app

SECRET = "sk-canary-0123456789"
RESPONSES = ["a[/i] and more", "[link=https://evil.example]click[/link]", "red \x1b[31mtext\x1b[0m\rover\u2028next"]


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> Path:
    triples = tmp_path / "triples.json"
    records = [
        {"id": i, "instruction": f"Say something {i}.", "input": "", "output": text, "judgment": None}
        for i, text in enumerate(RESPONSES)
    ]
    triples.write_text(json.dumps(records))
    path = tmp_path / "store.duckdb"
    code, _, err = cli("import", triples, "--db", path)
    assert code == 0, err
    return path


@pytest.mark.parametrize(
    "query",
    [
        "EXPLAIN ANALYZE COPY (SELECT 'x' AS x) TO '{db}' (FORMAT csv)",
        "EXPLAIN /* c */ ANALYSE SELECT 1",
        "EXPLAIN (ANALYZE) SELECT 1",
        "EXPLAIN COPY (SELECT 1) TO '{db}'",
        "EXPLAIN DELETE FROM prompts",
        "COPY (SELECT 1) TO '{db}'",
        "SET enable_external_access = true",
        "ATTACH '{db}.other' AS other",
        "INSERT INTO runs (run) VALUES ('x')",
        "UPDATE judgments SET verdict = 'positive'",
        "DELETE FROM prompts",
        "CREATE TABLE t (x INT)",
        "DROP TABLE prompts",
        "PRAGMA version",
        "CALL pragma_version()",
        "INSTALL httpfs",
        "LOAD httpfs",
    ],
)
def test_statements_that_write_or_reconfigure_are_refused_and_the_store_stays_byte_identical(db: Path, query: str):
    before = db.read_bytes()
    code, _, err = cli("sql", query.format(db=db), "--db", db)
    assert code == 1
    assert "refused" in err
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count(*) FROM triples",
        "WITH t AS (SELECT * FROM triples) SELECT count(*) FROM t",
        "FROM triples SELECT count(*)",
        "SHOW TABLES",
        "DESCRIBE triples",
        "SUMMARIZE SELECT length(response) FROM triples",
        "EXPLAIN (FORMAT json) SELECT 1",
    ],
)
def test_reads_run(db: Path, query: str):
    code, out, err = cli("sql", query, "--db", db, "--format", "csv")
    assert code == 0, err
    assert out.strip()


def test_explain_of_a_select_still_shows_the_plan(db: Path):
    code, out, err = cli("sql", "EXPLAIN SELECT count(*) FROM triples", "--db", db, "--format", "json")
    assert code == 0, err
    assert "physical_plan" in out


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_csv('https://example.com/data.csv')",
        "SELECT * FROM read_json_auto('{db}.json')",
    ],
)
def test_reading_outside_the_store_is_refused(db: Path, query: str, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_KEY", SECRET)
    code, out, err = cli("sql", query.format(db=db), "--db", db)
    assert code == 1
    assert "disabled by configuration" in err
    assert SECRET not in out + err


def test_a_query_over_the_time_limit_is_interrupted_and_a_waiting_import_then_succeeds(db: Path, tmp_path: Path):
    slow = "SELECT sum(hash(i)) FROM range(1000000000000::BIGINT) t(i)"
    query = subprocess.Popen(
        [sys.executable, "-m", "online_cut.cli", "sql", slow, "--db", str(db), "--timeout", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_until_locked(db, query)
    more = tmp_path / "more.json"
    more.write_text(json.dumps([{"instruction": "Add 1 and 1.", "input": "", "output": "2", "judgment": None}]))
    started = time.monotonic()
    code, out, err = cli("import", more, "--db", db, "--run", "more", "--wait", "60")
    assert code == 0, err
    assert "added 1 triples" in out
    assert time.monotonic() - started < 30
    _, query_err = query.communicate(timeout=30)
    assert query.returncode == 1
    assert "interrupted after 4 s" in query_err


def _wait_until_locked(db: Path, process: subprocess.Popen) -> None:
    """Return once `process` holds the store (a writer can no longer open it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            duckdb.connect(str(db)).close()
        except duckdb.IOException:
            return
        time.sleep(0.05)
    raise AssertionError("the query never opened the store")


def test_a_query_over_the_memory_limit_fails_with_a_named_error(db: Path):
    code, _, err = cli("sql", "SELECT list(i) FROM range(100000000) t(i)", "--db", db, "--memory-limit", "20MB")
    assert code == 1
    assert "memory" in err.lower()


def test_a_bad_memory_limit_is_named(db: Path):
    code, _, err = cli("sql", "SELECT 1", "--db", db, "--memory-limit", "lots")
    assert code == 1 and "--memory-limit 'lots'" in err


@pytest.mark.parametrize("format", ["table", "csv", "json"])
def test_stored_markup_prints_literally_and_control_characters_show_as_escapes(db: Path, format: str):
    code, out, err = cli("sql", "SELECT response FROM triples ORDER BY response", "--db", db, "--format", format)
    assert code == 0, err
    assert "a[/i] and more" in out
    assert "[link=https://evil.example]click[/link]" in out
    for acting in ("\x1b", "\r", "\u2028"):
        assert acting not in out
    if format == "json":
        assert sorted(row["response"] for row in json.loads(out)) == sorted(RESPONSES)
    else:
        assert r"red \x1b[31mtext\x1b[0m\x0dover\u2028next" in out


def test_markup_in_column_names_and_in_error_messages_prints_literally(db: Path):
    code, out, err = cli("sql", 'SELECT 1 AS "[red]x[/red]"', "--db", db)
    assert code == 0 and "[red]x[/red]" in out
    code, _, err = cli("sql", "SELECT * FROM \"no[/i]such\"", "--db", db)
    assert code == 1 and "no[/i]such" in err


def test_while_a_writer_holds_the_store_the_exports_are_read_with_the_same_lock_down(db: Path, tmp_path: Path):
    exports = tmp_path / "exports"
    assert cli("export", "--format", "parquet", "--db", db, "--out", exports)[0] == 0
    hold = f"import duckdb, time; db = duckdb.connect({str(db)!r}); print('holding', flush=True); time.sleep(120)"
    writer = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        code, out, err = cli("sql", "SELECT count(*) AS n FROM triples", "--db", db, "--exports", exports, "--format", "csv")
        assert code == 0, err
        assert out == f"n\n{len(RESPONSES)}\n" and "reading the Parquet exports" in err
        export_file = next(exports.rglob("*.parquet"))
        before = export_file.read_bytes()
        code, _, err = cli("sql", f"SELECT * FROM read_parquet('{export_file}')", "--db", db, "--exports", exports)
        assert code == 1 and "disabled by configuration" in err
        code, _, err = cli("sql", f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{export_file}'", "--db", db, "--exports", exports)
        assert code == 1 and export_file.read_bytes() == before
    finally:
        writer.kill()
        writer.wait()
