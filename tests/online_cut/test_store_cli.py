"""`online-cut import | export | sql` on the CUT paper's data: the issue's bars, through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from online_cut.cli import app

COUNT = "SELECT count(*) AS triples, count(*) FILTER (WHERE verdict = 'negative') AS negative FROM triples"


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def counts(db: Path) -> str:
    code, out, err = cli("sql", COUNT, "--db", db, "--format", "csv")
    assert code == 0, err
    return out


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.duckdb"


@pytest.fixture(scope="module")
def imported_once(tmp_path_factory: pytest.TempPathFactory, cut_paper_iter1: Path) -> Path:
    db = tmp_path_factory.mktemp("imported") / "store.duckdb"
    code, _, err = cli("import", cut_paper_iter1, "--db", db)
    assert code == 0, err
    return db


@pytest.fixture
def imported(tmp_path: Path, imported_once: Path) -> Path:
    """A fresh copy of a store holding online-iter1.json as run `online-iter1`."""
    db = tmp_path / "imported.duckdb"
    shutil.copyfile(imported_once, db)
    return db


def test_import_gives_1000_triples_287_negative_and_a_second_import_adds_none(cut_paper_iter1: Path, db: Path):
    code, out, err = cli("import", cut_paper_iter1, "--db", db)
    assert code == 0, err
    assert "read 1000 records; added 1000 triples to run 'online-iter1'" in out
    assert counts(db) == "triples,negative\n1000,287\n"

    code, out, _ = cli("import", cut_paper_iter1, "--db", db)
    assert code == 0 and "added 0 triples" in out and "1000 were already stored" in out
    assert counts(db) == "triples,negative\n1000,287\n"


GOOD = {"id": 0, "instruction": "Add 2 and 2.", "input": "", "output": "4", "judgment": None}
BAD_RECORDS = {
    "missing output": {k: v for k, v in GOOD.items() if k != "output"},
    "judgment not a string": {**GOOD, "judgment": 3},
}


def _write(path: Path, records: list, jsonl: bool) -> None:
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=2))


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("problem", ["missing output", "judgment not a string", "invalid JSON"])
def test_a_malformed_record_is_named_and_leaves_the_store_unchanged(
    tmp_path: Path, imported: Path, problem: str, suffix: str
):
    db = imported
    before_bytes, before_counts = db.read_bytes(), counts(db)
    bad = tmp_path / f"bad{suffix}"
    good = [{**GOOD, "id": i, "instruction": f"Add {i} and 2."} for i in range(5)]
    if problem == "invalid JSON":
        _write(bad, good, jsonl=suffix == ".jsonl")
        # Break the 4th record: drop the closing quote of its instruction.
        bad.write_text(bad.read_text().replace('"Add 3 and 2."', '"Add 3 and 2.'))
    else:
        good[3] = {**BAD_RECORDS[problem], "instruction": "Add 3 and 2."}
        _write(bad, good, jsonl=suffix == ".jsonl")

    code, _, err = cli("import", bad, "--db", db, "--run", "online-iter1")
    assert code != 0
    assert str(bad) in err.replace("\n", "") and "record 4" in err and "nothing was imported" in err
    assert "Traceback" not in err
    assert db.read_bytes() == before_bytes
    assert counts(db) == before_counts


def test_a_bad_file_does_not_create_a_store(tmp_path: Path, db: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    assert cli("import", bad, "--db", db)[0] != 0
    assert not db.exists()


@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM judgments", "DROP TABLE prompts", "SELECT 1; DELETE FROM responses", "COPY prompts TO 'x.csv'",
     "UPDATE judgments SET verdict = 'positive'", "ATTACH 'other.duckdb'"],
)
def test_sql_refuses_writes_and_changes_nothing(imported: Path, statement: str):
    db = imported
    before = db.read_bytes()
    code, out, err = cli("sql", statement, "--db", db)
    assert code != 0 and "refused" in err and "only reads" in err
    assert out == ""
    assert db.read_bytes() == before
    assert counts(db) == "triples,negative\n1000,287\n"


def test_sql_prints_a_readable_table_by_default_and_json_on_request(imported: Path):
    db = imported
    code, out, _ = cli("sql", "SELECT verdict, count(*) AS n FROM triples GROUP BY ALL ORDER BY verdict", "--db", db)
    assert code == 0
    assert "verdict" in out and "negative" in out and "287" in out and "2 rows" in out
    code, out, _ = cli("sql", "SELECT verdict, count(*) AS n FROM triples GROUP BY ALL ORDER BY verdict",
                       "--db", db, "--format", "json")
    assert json.loads(out) == [{"verdict": "negative", "n": 287}, {"verdict": "positive", "n": 713}]


def test_sql_says_what_is_wrong_without_a_traceback(tmp_path: Path, imported: Path):
    code, _, err = cli("sql", "SELECT 1", "--db", tmp_path / "missing.duckdb")
    assert code != 0 and "no store at" in err
    db = imported
    code, _, err = cli("sql", "SELECT * FROM no_such_table", "--db", db)
    assert code != 0 and "no_such_table" in err and "Traceback" not in err
    code, _, err = cli("sql", "SELEC 1", "--db", db)
    assert code != 0 and "not valid SQL" in err


def test_import_export_import_is_lossless(tmp_path: Path, cut_paper_iter1: Path, imported: Path):
    original = json.loads(cut_paper_iter1.read_text())
    db = imported

    assert cli("export", "--db", db, "--format", "json", "--out", tmp_path / "out.json")[0] == 0
    assert json.loads((tmp_path / "out.json").read_text()) == original

    assert cli("export", "--db", db, "--format", "jsonl", "--out", tmp_path / "out.jsonl")[0] == 0
    second = tmp_path / "second.duckdb"
    assert cli("import", tmp_path / "out.jsonl", "--db", second, "--run", "online-iter1")[0] == 0
    cli("export", "--db", second, "--format", "json", "--out", tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == original

    exports = tmp_path / "exports"
    code, out, _ = cli("export", "--db", db, "--format", "parquet", "--out", exports)
    assert code == 0 and "wrote 1000 triples" in out
    parquet = exports / "run=online-iter1" / "round=0" / "triples.parquet"
    third = tmp_path / "third.duckdb"
    assert cli("import", parquet, "--db", third, "--run", "online-iter1")[0] == 0
    cli("export", "--db", third, "--format", "json", "--out", tmp_path / "from-parquet.json")
    assert json.loads((tmp_path / "from-parquet.json").read_text()) == original
    assert counts(third) == "triples,negative\n1000,287\n"


def test_import_into_a_named_run_and_round(tmp_path: Path, db: Path):
    triples = tmp_path / "later.jsonl"
    triples.write_text('{"instruction": "Add 1 and 1.", "output": "3", "judgment": "1 + 1 is 2."}\n')
    code, out, _ = cli("import", triples, "--db", db, "--run", "cut-paper", "--round", "1")
    assert code == 0 and "run 'cut-paper' round 1" in out
    code, out, _ = cli("sql", "SELECT run, round, verdict, judge, input FROM triples", "--db", db, "--format", "csv")
    assert out == "run,round,verdict,judge,input\ncut-paper,1,negative,imported,\n"
    code, _, err = cli("import", triples, "--db", db, "--run", "no spaces please")
    assert code != 0 and "run name 'no spaces please' is not allowed" in err
