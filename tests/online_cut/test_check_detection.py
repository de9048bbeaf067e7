"""`online-cut check-detection`: the contrast flags of a policy against the judges' spans, before training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from judges.judgment import JudgeItem
from judges.rules import SumsCritic
from online_cut.cli import app


def sums_file(path: Path, count: int) -> Path:
    """`count` answers to three one-digit sums, one part wrong in each, judged by the sums critic (with spans)."""
    critic = SumsCritic()
    records = []
    for i in range(count):
        pairs = [(i % 9 + 1, 1), (2, i % 7 + 1), (3, 3)]
        parts = [str(a + b) for a, b in pairs]
        parts[i % 3] = str(int(parts[i % 3]) + 1)
        instruction = "Add each pair and reply with the sums separated by commas: " + ", ".join(
            f"{a} + {b}" for a, b in pairs) + "."
        judged = critic.judge_one(JudgeItem(instruction=instruction, response=", ".join(parts)))
        records.append({"instruction": instruction, "output": ", ".join(parts), "judgment": judged.judgment,
                        "spans": [span.model_dump() for span in judged.spans]})
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_it_prints_recall_precision_and_a_recommendation(tiny_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(tiny_model)}, "cut": {"lam": 1.1}}))
    result = CliRunner().invoke(app, ["check-detection", "--config", str(config), "--triples",
                                      str(sums_file(tmp_path / "sums.jsonl", 12)), "--sample", "8"])
    assert result.exit_code == 0, result.output
    assert re.search(r"8 negatives, (\d+) tokens in the judges' spans, \d+ flagged by the contrast", result.output)
    assert re.search(r"contrast detection against the spans: recall (\S+), precision (\S+), F1 (\S+)", result.output)
    assert re.search(r"recommended: cut\.detection: (spans|contrast)", result.output)


def test_triples_without_located_spans_are_refused_with_the_reason(tiny_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(tiny_model)}}))
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"instruction": "1 + 1?", "output": "3", "judgment": "Wrong: 2."}) + "\n")
    result = CliRunner().invoke(app, ["check-detection", "--config", str(config), "--triples", str(plain)])
    assert result.exit_code == 1
    assert "none of the 1 triples is a negative whose judgment located a span" in result.stderr


def test_a_query_whose_spans_are_malformed_is_refused_naming_the_row(tiny_model: Path, tmp_path: Path) -> None:
    from storage.store import Store

    store = Store(tmp_path / "store.duckdb")
    store.add_run("r")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(tiny_model)}}))
    query = ("SELECT 'What is 1 + 1?' AS instruction, '' AS input, '3' AS response, 'Wrong.' AS judgment, "
             "'negative' AS verdict, [{'quote': '3', 'start': 1, 'end': 0, 'text': '3', 'severity': NULL}] AS spans")
    result = CliRunner().invoke(app, ["check-detection", "--config", str(config), "--sql", query,
                                      "--db", str(tmp_path / "store.duckdb")])
    assert result.exit_code == 1
    assert "--sql: row 1: spans: " in result.stderr and "start < end" in result.stderr
