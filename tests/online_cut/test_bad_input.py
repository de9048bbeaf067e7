"""Bad input to the CLI: a named error, exit 1, no traceback, and the store as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from online_cut.cli import app

RECORDS = [
    {"id": 0, "instruction": "Add 2 and 2.", "input": "", "output": "4", "judgment": None},
    {"id": 1, "instruction": "Add 3 and 4.", "input": "", "output": "8", "judgment": "8 is wrong: 3 + 4 = 7."},
]


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.duckdb"
    code, _, err = cli("import", write(tmp_path / "first" / "round.json", RECORDS), "--db", path)
    assert code == 0, err
    return path


def test_a_same_named_file_with_other_text_is_refused_naming_the_records_and_the_store_is_unchanged(
    db: Path, tmp_path: Path
):
    edited = [RECORDS[0], {**RECORDS[1], "judgment": "Off by one: 3 + 4 = 7."}]
    other = write(tmp_path / "second" / "round.json", [{**edited[0], "output": "four"}, edited[1]])
    before = db.read_bytes()
    code, _, err = cli("import", other, "--db", db)
    assert code == 1
    assert "2 records would replace different triples already stored in run 'round'" in err
    assert "record 1: its output differs" in err and "record 2: its judgment differs" in err
    assert "--run NAME" in err and "nothing was imported" in err
    assert db.read_bytes() == before

    code, out, err = cli("import", other, "--db", db, "--run", "round-edited")
    assert code == 0 and "added 2 triples" in out, err


def test_the_same_file_imported_again_still_adds_nothing(db: Path, tmp_path: Path):
    code, out, _ = cli("import", tmp_path / "first" / "round.json", "--db", db)
    assert code == 0 and "added 0 triples" in out


def test_an_export_holding_line_separators_imports_back_whole(db: Path, tmp_path: Path):
    text = "first\u2028second\u0085third\u2029fourth"
    source = write(tmp_path / "sep.json", [{**RECORDS[0], "output": text}])
    assert cli("import", source, "--db", db, "--run", "sep")[0] == 0
    exported = tmp_path / "sep.jsonl"
    code, _, err = cli("export", "--format", "jsonl", "--out", exported, "--db", db, "--run", "sep")
    assert code == 0, err
    fresh = tmp_path / "fresh.duckdb"
    code, out, err = cli("import", exported, "--db", fresh, "--run", "sep")
    assert code == 0 and "read 1 records; added 1" in out, err
    code, out, _ = cli("sql", "SELECT response FROM triples", "--db", fresh, "--format", "json")
    assert json.loads(out) == [{"response": text}]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_deeply_nested_json_is_a_named_error(db: Path, tmp_path: Path, suffix: str):
    deep = tmp_path / f"deep{suffix}"
    deep.write_text("[" * 100_000 + "]" * 100_000 if suffix == ".json" else '{"a":' * 100_000 + "1" + "}" * 100_000)
    before = db.read_bytes()
    code, _, err = cli("import", deep, "--db", db)
    assert code == 1 and "nested too deeply" in err
    assert db.read_bytes() == before


def test_an_out_of_range_round_is_refused(db: Path, tmp_path: Path):
    code, _, err = cli("import", tmp_path / "first" / "round.json", "--db", db, "--round", str(2**31))
    assert code != 0 and "--round" in err


def test_a_directory_or_fifo_as_store_is_a_named_error(tmp_path: Path):
    records = write(tmp_path / "r.json", RECORDS)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for store in (tmp_path, fifo):
        for args in (("import", records), ("export", "--format", "json", "--out", tmp_path / "o.json"), ("adapters", "list")):
            code, _, err = cli(*args, "--db", store)
            assert code == 1, args
            assert f"{store}: not a regular file" in err or f"no store at {store}" in err


def test_a_fifo_as_records_file_is_a_named_error(db: Path, tmp_path: Path):
    fifo = tmp_path / "records.json"
    os.mkfifo(fifo)
    code, _, err = cli("import", fifo, "--db", db)
    assert code == 1 and "not a regular file" in err


def test_a_config_that_is_not_utf8_a_directory_or_uses_aliases_is_a_named_error(tmp_path: Path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("rounds: 2\njudge:\n  model: caf\xe9\n".encode("latin-1"))
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text('a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n')
    for config, message in ((latin1, "not UTF-8 text"), (tmp_path, "not a regular file"), (aliases, "aliases")):
        code, out, err = cli("config", "check", config)
        assert code == 1 and f"{config}: " in err and message in err
        assert len(err) < 1000


def test_training_with_the_shipped_model_not_converted_says_how_to_convert_it(tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  cache_dir: {tmp_path / 'empty-cache'}\n")
    code, _, err = cli("train", "--triples", write(tmp_path / "t.json", RECORDS), "--config", config,
                       "--out", tmp_path / "adapter")
    assert code == 1 and "the shipped model is not converted" in err and "online-cut model prepare" in err
