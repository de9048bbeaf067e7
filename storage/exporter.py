"""Export judged triples: Parquet partitioned by run and round, the CUT paper's JSON/JSONL, or
one file (JSONL or Parquet) in a record shape other tools read.

Parquet goes to `<out>/run=<run>/round=<round>/triples.parquet` (Hive layout), one file per
round, each replaced atomically, so a reader of the folder never sees a half-written file.
Both formats carry the CUT fields (`id`, `instruction`, `input`, `output`, `judgment`):
importing an export gives back the same triples. A positive judgment is exported as null
(the format's convention), so the text of a positive judgment, if any, stays in the store.
`id` is the imported record's id, or the response id for sampled responses.

The shapes (`SHAPES`), one record per triple unless said otherwise:
  cut       id, instruction, input, output, judgment  (the paper's, as above)
  chat      messages: [{role: user, content: prompt}, {role: assistant, content: response}]
  kto       prompt, completion, label (true for a positive verdict)
  dpo       prompt, chosen, rejected  (one record per preference pair, built by the caller)
  critique  instruction, input, response, judgment, verdict, score  (to train a critic)
where the prompt is the instruction, and the input after a newline when there is one, as the
trainer builds it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formats.triple_file import write_records
from storage.records import Triple
from storage.store import Store

SHAPES = ("cut", "chat", "kto", "dpo", "critique")
SHAPE_SUFFIXES = (".jsonl", ".parquet")

EXPORT_FILE = "triples.parquet"

# The triples to export with the CUT fields first; `seq` keeps the order they were stored in.
_EXPORT_ROWS = """
    CREATE TEMP TABLE export_rows AS
    SELECT coalesce(r.source_id, to_json(t.response_id)) AS id, t.instruction, t.input, t.response AS output,
           CASE WHEN t.verdict = 'negative' THEN t.judgment END AS judgment,
           t.verdict, t.score, t.spans, t.judge, t.adapter, t.created_at, t.response_id, t.run, t.round,
           row_number() OVER (
               ORDER BY t.run, t.round, r.source_index, r.created_at, r.prompt_id, r.sample_index, t.judge
           ) AS seq
    FROM triples t JOIN responses r USING (response_id)
    WHERE (? IS NULL OR t.run = ?) AND (? IS NULL OR t.round = ?) AND (? IS NULL OR t.judge = ?)
"""


@dataclass(frozen=True)
class ExportedRound:
    run: str
    round: int
    path: Path
    triples: int


def export_folder(run: str, round: int) -> Path:
    """Where a round's export lies under the exports folder (and a mirror): Hive-style `run=<run>/round=<r>`."""
    return Path(f"run={run}", f"round={round}")


# Every round's export file, for readers of the whole folder.
EXPORT_GLOB = str(Path("run=*", "round=*", EXPORT_FILE))


def export_parquet(
    store: Store, out_dir: Path, *, run: str | None = None, round: int | None = None, judge: str | None = None
) -> list[ExportedRound]:
    """Write one Parquet file per (run, round) that has triples, optionally only one run, round or judge."""
    exported = []
    with store.reading() as db:
        db.execute(_EXPORT_ROWS, [run, run, round, round, judge, judge])
        partitions = db.execute(
            "SELECT run, round, count(*) FROM export_rows GROUP BY ALL ORDER BY run, round"
        ).fetchall()
        for part_run, part_round, count in partitions:
            folder = out_dir / export_folder(part_run, part_round)
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f"{EXPORT_FILE}.partial"
            # COPY takes no parameters; run names are restricted to [A-Za-z0-9._-] and rounds are ints.
            db.execute(
                f"COPY (SELECT * EXCLUDE (run, round, seq) FROM export_rows WHERE run = '{part_run}' "
                f"AND round = {int(part_round)} ORDER BY seq) TO '{_sql_string(partial)}' (FORMAT parquet)"
            )
            os.replace(partial, folder / EXPORT_FILE)
            exported.append(ExportedRound(part_run, part_round, folder / EXPORT_FILE, count))
    return exported


def cut_records(
    store: Store, *, run: str | None = None, round: int | None = None, judge: str | None = None
) -> list[dict[str, Any]]:
    """The triples in the CUT paper's fields, in the order they were stored."""
    with store.reading() as db:
        db.execute(_EXPORT_ROWS, [run, run, round, round, judge, judge])
        rows = db.execute("SELECT id, instruction, input, output, judgment, spans FROM export_rows ORDER BY seq").fetchall()
    return [
        {"id": json.loads(id), "instruction": instruction, "input": input, "output": output, "judgment": judgment}
        | ({"spans": spans} if spans else {})
        for id, instruction, input, output, judgment, spans in rows
    ]


def export_cut(
    store: Store, out: Path, *, run: str | None = None, round: int | None = None, judge: str | None = None,
    jsonl: bool = False,
) -> int:
    """Write the CUT paper's format (a JSON list, or JSON Lines); returns the number of triples written."""
    records = cut_records(store, run=run, round=round, judge=judge)
    write_records(out, records, format="jsonl" if jsonl else "json")
    return len(records)


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")


def prompt_text(triple: Triple) -> str:
    return f"{triple.instruction}\n{triple.input}" if triple.input else triple.instruction


def shaped_record(shape: str, triple: Triple) -> dict[str, Any]:
    """One triple in a per-triple shape (`cut` records come from `cut_records`, `dpo` ones from `pair_record`)."""
    if shape == "chat":
        return {"messages": [{"role": "user", "content": prompt_text(triple)},
                             {"role": "assistant", "content": triple.response}]}
    if shape == "kto":
        return {"prompt": prompt_text(triple), "completion": triple.response, "label": triple.verdict == "positive"}
    if shape == "critique":
        return {"instruction": triple.instruction, "input": triple.input, "response": triple.response,
                "judgment": triple.judgment, "verdict": triple.verdict, "score": triple.score,
                "spans": [span.model_dump() for span in triple.spans or ()]}
    raise ValueError(f"unknown record shape {shape!r}: one of {', '.join(SHAPES)}")


def pair_record(chosen: Triple, rejected: Triple) -> dict[str, Any]:
    return {"prompt": prompt_text(chosen), "chosen": chosen.response, "rejected": rejected.response}
