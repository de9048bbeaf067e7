"""API keys never land in the store or its exports, wherever a writer puts them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from online_cut.cli import app
from storage.records import Judgment, Prompt, Response
from storage.store import Store

SECRET = "sk-test-SECRET-4f3a9"
CANARY = "CANARY-visible-7b1"  # stored the same ways as the secret: proves the scans can see text


def _text_columns_containing(db: duckdb.DuckDBPyConnection, needle: str, relations: list[str]) -> list[str]:
    hits = []
    for relation in relations:
        for column, column_type, *_ in db.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall():
            if column_type in ("VARCHAR", "JSON"):
                found = db.execute(f'SELECT count(*) FROM {relation} WHERE "{column}"::VARCHAR LIKE ?', [f"%{needle}%"])
                if found.fetchone()[0]:
                    hits.append(f"{relation}.{column}")
    return hits


def test_secrets_are_in_neither_the_database_nor_the_exports(
    tmp_path: Path, cut_paper_iter1: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    db, exports = tmp_path / "store.duckdb", tmp_path / "exports"
    store = Store(db)
    store.add_run("run", config={"judge": {"api_key": SECRET, "base_url": "http://judge", "note": CANARY}})
    prompt = Prompt(instruction=f"Repeat after me: {SECRET} {CANARY}")
    response = Response(run="run", round=0, prompt_id=prompt.prompt_id, text=f"{SECRET} {CANARY}",
                        sampling={"headers": {"Authorization": f"Bearer {SECRET}"}, "note": CANARY})
    judgment = Judgment(response_id=response.response_id, judge="gpt", verdict="negative",
                        judgment=f"It leaked {SECRET} {CANARY}", raw_reply=f"{SECRET} {CANARY}",
                        usage={"api_key": SECRET, "note": CANARY})
    with store.transaction() as tx:
        tx.add_prompts([prompt])
        tx.add_responses([response])
        tx.add_judgments([judgment])
    runner = CliRunner()
    assert runner.invoke(app, ["import", str(cut_paper_iter1), "--db", str(db)]).exit_code == 0
    assert runner.invoke(app, ["export", "--db", str(db), "--format", "parquet", "--out", str(exports)]).exit_code == 0
    out = tmp_path / "triples.jsonl"
    assert runner.invoke(app, ["export", "--db", str(db), "--format", "jsonl", "--out", str(out)]).exit_code == 0

    written = [db, *db.parent.glob("*.wal"), out, *exports.rglob("*.parquet")]
    assert all(SECRET.encode() not in path.read_bytes() for path in written)
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        assert _text_columns_containing(con, SECRET, tables) == []
        assert len(_text_columns_containing(con, CANARY, tables)) >= 6
    with duckdb.connect() as con:
        parquet = f"read_parquet('{exports}/**/*.parquet')"
        assert _text_columns_containing(con, SECRET, [parquet]) == []
        assert _text_columns_containing(con, CANARY, [parquet]) != []
    assert CANARY in out.read_text()
