"""The store as the data hub: train on a SQL selection, export the shapes TRL and `datasets` read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from online_cut.cli import app

RUN_A = [
    {"instruction": "What is 2 + 3?", "input": "", "output": "5", "judgment": None},
    {"instruction": "What is 2 + 3?", "input": "", "output": "6", "judgment": "Wrong: 2 + 3 = 5."},
    {"instruction": "What is 4 + 4?", "input": "", "output": "8", "judgment": None},
    {"instruction": "What is 4 + 4?", "input": "", "output": "9", "judgment": "Wrong: 4 + 4 = 8."},
    {"instruction": "Name a colour.", "input": "One word.", "output": "Blue", "judgment": None},
]
RUN_B = [
    {"instruction": "What is 7 + 1?", "input": "", "output": "8", "judgment": None},
    {"instruction": "What is 7 + 1?", "input": "", "output": "71", "judgment": "Wrong: 7 + 1 = 8."},
]


def cli(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def store(tmp_path: Path) -> Path:
    db = tmp_path / "store.duckdb"
    for run, records in (("a", RUN_A), ("b", RUN_B)):
        source = tmp_path / f"{run}.json"
        source.write_text(json.dumps(records))
        code, _, err = cli("import", source, "--db", db, "--run", run, "--round", "1")
        assert code == 0, err
    return db


@pytest.fixture
def config(tmp_path: Path, tiny_model: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(tiny_model)},
                                    "cut": {"positive_ratio": None, "max_length": 64, "micro_batch_size": 4}}))
    return path


def test_train_on_a_sql_selection_trains_only_the_selected_rows(store, config, tmp_path):
    query = "SELECT * FROM triples WHERE run = 'a'"
    code, out, err = cli("train", "--sql", query, "--db", store, "--config", config, "--out", tmp_path / "adapter")
    assert code == 0, err
    summary = json.loads((tmp_path / "adapter" / "summary.json").read_text())
    assert summary["sql"] == query and summary["selected"] == len(RUN_A) and summary["rows"] == len(RUN_A)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_selection_missing_a_column_fails_naming_it_before_any_model_loads(store, tmp_path):
    config = tmp_path / "no-model.yaml"
    config.write_text(yaml.safe_dump({"model": {"hub_id": "no-such/model-anywhere"}}))
    code, _, err = cli("train", "--sql", "SELECT instruction, response, verdict FROM triples", "--db", store,
                       "--config", config, "--out", tmp_path / "adapter")
    assert code == 1
    assert "no column input, judgment" in err
    assert not (tmp_path / "adapter").exists()


def test_a_selection_that_writes_is_refused_and_the_store_is_unchanged(store, config, tmp_path):
    before = store.read_bytes()
    code, _, err = cli("train", "--sql", "DELETE FROM judgments", "--db", store, "--config", config,
                       "--out", tmp_path / "adapter")
    assert code == 1 and "DELETE statements are refused" in err
    assert store.read_bytes() == before


def test_triples_and_sql_exclude_each_other(store, config, tmp_path):
    code, _, err = cli("train", "--sql", "SELECT * FROM triples", "--triples", tmp_path / "a.json", "--db", store,
                       "--config", config, "--out", tmp_path / "adapter")
    assert code == 1 and "one of --triples FILE and --sql QUERY" in err


EXPECTED_COLUMNS = {
    "cut": {"id", "instruction", "input", "output", "judgment"},
    "chat": {"messages"},
    "kto": {"prompt", "completion", "label"},
    "dpo": {"prompt", "chosen", "rejected"},
    "critique": {"instruction", "input", "response", "judgment", "verdict", "score", "spans"},
}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("shape", list(EXPECTED_COLUMNS))
def test_each_export_shape_loads_with_datasets(store, tmp_path, shape, suffix):
    from datasets import load_dataset

    out = tmp_path / f"{shape}{suffix}"
    code, stdout, err = cli("export", "--format", shape, "--out", out, "--db", store, "--run", "a")
    assert code == 0, err
    loaded = load_dataset("json" if suffix == ".jsonl" else "parquet", data_files=str(out), split="train")
    assert set(loaded.column_names) == EXPECTED_COLUMNS[shape]
    assert len(loaded) == (2 if shape == "dpo" else len(RUN_A))
    if shape == "chat":
        assert [m["role"] for m in loaded[0]["messages"]] == ["user", "assistant"]
        assert {row["messages"][0]["content"] for row in loaded} >= {"Name a colour.\nOne word."}
    if shape == "kto":
        assert sorted(loaded["label"]) == [False, False, True, True, True]


def test_the_dpo_export_holds_the_pairs_the_dpo_objective_trains_on(store, config, tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert cli("export", "--format", "dpo", "--out", out, "--db", store, "--run", "a", "--round", "1")[0] == 0
    exported = {(r["prompt"], r["chosen"], r["rejected"]) for r in map(json.loads, out.read_text().splitlines())}

    query = "SELECT * FROM triples WHERE run = 'a' AND round = 1 ORDER BY response DESC"
    code, _, err = cli("train", "--sql", query, "--db", store, "--config", config, "--out", tmp_path / "dpo",
                       "--objective", "dpo")
    assert code == 0, err
    trained = json.loads((tmp_path / "dpo" / "summary.json").read_text())["pairs"]
    selected = sorted(RUN_A, key=lambda r: r["output"], reverse=True)
    prompt = lambda r: f"{r['instruction']}\n{r['input']}" if r["input"] else r["instruction"]  # noqa: E731
    assert {(prompt(selected[c]), selected[c]["output"], selected[r]["output"]) for c, r in trained} == exported
    assert exported == {("What is 2 + 3?", "5", "6"), ("What is 4 + 4?", "8", "9")}


def test_a_shape_export_to_a_folder_name_is_refused(store, tmp_path):
    code, _, err = cli("export", "--format", "chat", "--out", tmp_path / "chat", "--db", store)
    assert code == 1 and "writes a .jsonl or .parquet file" in err


def test_a_dpo_export_without_any_pair_says_why(store, tmp_path):
    code, _, err = cli("export", "--format", "dpo", "--out", tmp_path / "p.jsonl", "--db", store, "--run", "a",
                       "--judge", "no-such-judge")
    assert code == 1 and "no preference pair" in err and not (tmp_path / "p.jsonl").exists()
