"""`online-cut annotate export | import`: people's judgments made outside the UI come back checked, or not at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from storage.records import Judgment, Prompt, Response
from storage.store import Store

ONLINE_CUT = str(Path(sys.executable).with_name("online-cut"))


def annotate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ONLINE_CUT, "annotate", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.duckdb"
    store = Store(path)
    for index, text in enumerate(["47 + 38 = 84", "85", "I cannot say."]):
        prompt = Prompt(instruction=f"What is 47 + {38 + index}?")
        response = Response(run="r", round=1, prompt_id=prompt.prompt_id, text=text)
        with store.transaction() as tx:
            tx.add_prompts([prompt])
            tx.add_responses([response])
            if index == 0:
                tx.add_judgments([Judgment(response_id=response.response_id, judge="rule:addition",
                                           verdict="negative", judgment="47 + 38 = 85, not 84.")])
    return path


def test_export_then_import_stores_the_judgments_under_each_persons_name(db: Path, tmp_path: Path) -> None:
    pending = tmp_path / "pending.jsonl"
    result = annotate("export", "--run", "r", "--out", str(pending), "--db", str(db))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in pending.read_text().splitlines()]
    assert len(rows) == 3 and {row["response"] for row in rows} == {"47 + 38 = 84", "85", "I cannot say."}
    drafted = next(row for row in rows if row["response"] == "47 + 38 = 84")
    assert (drafted["draft_judge"], drafted["draft_verdict"]) == ("rule:addition", "negative")

    judged = tmp_path / "judged.jsonl"
    answers = {"47 + 38 = 84": {"verdict": "negative", "judgment": "Off by one.", "quotes": ["84"], "score": 2},
               "85": {"verdict": "positive"}}
    judged.write_text("".join(json.dumps({"response_id": row["response_id"], "annotator": "ana",
                                          **answers[row["response"]]}) + "\n"
                              for row in rows if row["response"] in answers))
    result = annotate("import", str(judged), "--db", str(db))
    assert result.returncode == 0, result.stderr
    stored = Store(db).query("SELECT j.judge, j.verdict, j.score, r.text FROM judgments j JOIN responses r "
                             "USING (response_id) WHERE j.judge LIKE 'human:%' ORDER BY r.text")
    assert [(s["judge"], s["verdict"], s["score"], s["text"]) for s in stored] == [
        ("human:ana", "negative", 2.0, "47 + 38 = 84"), ("human:ana", "positive", None, "85")]
    assert Store(db).query("SELECT start, \"end\" FROM judgment_spans WHERE judge = 'human:ana'") == [
        {"start": 10, "end": 12}]

    annotate("export", "--run", "r", "--out", str(pending), "--db", str(db))
    assert [json.loads(line)["response"] for line in pending.read_text().splitlines()] == ["I cannot say."]


@pytest.mark.parametrize(("answer", "message"), [
    ({"response_id": "nope", "annotator": "ana", "verdict": "positive"}, "line 2: unknown response_id 'nope'"),
    ({"annotator": "ana", "verdict": "maybe"}, "line 2: the verdict must be positive or negative, not 'maybe'"),
    ({"annotator": "ana", "verdict": "negative"}, "line 2: a negative verdict needs the judgment"),
    ({"annotator": "ana", "verdict": "negative", "judgment": "x", "quotes": ["99"]}, "line 2: the wrong part '99'"),
    ({"annotator": "a b", "verdict": "positive"}, "line 2: your name 'a b'"),
])
def test_a_bad_line_stops_the_import_naming_it_and_nothing_is_written(db: Path, tmp_path: Path, answer, message) -> None:
    ids = [row["response_id"] for row in Store(db).query("SELECT response_id FROM responses ORDER BY response_id")]
    judged = tmp_path / "judged.jsonl"
    good = {"response_id": ids[0], "annotator": "ana", "verdict": "positive"}
    judged.write_text(json.dumps(good) + "\n" + json.dumps({"response_id": ids[1], **answer}) + "\n")
    result = annotate("import", str(judged), "--db", str(db))
    assert result.returncode != 0 and message in " ".join(result.stderr.split())
    assert Store(db).query("SELECT count(*) AS n FROM judgments WHERE judge LIKE 'human:%'") == [{"n": 0}]


def test_importing_again_adds_nothing_and_a_changed_line_is_refused(db: Path, tmp_path: Path) -> None:
    [first] = [row["response_id"] for row in Store(db).query("SELECT response_id FROM responses ORDER BY response_id")][:1]
    judged = tmp_path / "judged.jsonl"
    judged.write_text(json.dumps({"response_id": first, "annotator": "ana", "verdict": "positive"}) + "\n")
    assert annotate("import", str(judged), "--db", str(db)).returncode == 0
    again = annotate("import", str(judged), "--db", str(db))
    assert again.returncode == 0 and "stored 0 judgments" in again.stdout
    judged.write_text(json.dumps({"response_id": first, "annotator": "ana", "verdict": "negative",
                                  "judgment": "On second thought, wrong."}) + "\n")
    changed = annotate("import", str(judged), "--db", str(db))
    assert changed.returncode != 0 and "line 1: human:ana judged this response already" in " ".join(changed.stderr.split())
    assert Store(db).query("SELECT verdict FROM judgments WHERE judge = 'human:ana'") == [{"verdict": "positive"}]
