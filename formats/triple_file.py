"""The CUT paper's triple files: Alpaca-style records as a JSON list, JSON Lines or Parquet.

A record is `{"id": 0, "instruction": ..., "input": "", "output": ..., "judgment": null}`:
`output` is the response, `judgment` is null when the response was judged fine (positive)
and the text of what is wrong otherwise (negative). `id` is optional, `input` defaults to
"", `spans` (optional) lists the parts of `output` a negative judgment blames, each
`{"quote", "start", "end", "text", "severity"}` with character offsets into `output`
(formats/spans.py), `truncated` (optional) says the sampler cut `output` off at its token
limit; other fields are ignored. Reading checks every record and names the file and the
record number (1-based) of the first bad one.

`read_records` is the one reader of such files for every part of the pipeline (triples,
prompt files, responses to judge); each caller validates the raw records its own way.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from formats.spans import Span

RecordFormat = Literal["json", "jsonl", "parquet"]

SUFFIXES = (".json", ".jsonl", ".parquet")
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


class CutFormatError(ValueError):
    """A record file that cannot be read, or a bad CUT triple; the message names the file and the record."""


class CutRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    id: int | str | None = None
    instruction: str = Field(min_length=1)
    input: str = ""
    output: str
    judgment: str | None = Field(description="required; null for a positive judgment")
    score: int | float | None = Field(None, description="optional: the judge's score, which DPO pairs by")
    spans: list[Span] = Field(default_factory=list, description="optional: the parts of `output` the judgment blames")
    truncated: bool = Field(False, description="optional: the sampler cut `output` off at its token limit")

    @field_validator("spans", mode="before")
    @classmethod
    def _no_spans_is_empty(cls, spans: Any) -> Any:
        return [] if spans is None else spans  # an exported Parquet file holds null where a judgment names none

    @model_validator(mode="after")
    def _spans_are_in_the_output(self) -> CutRecord:
        for index, span in enumerate(self.spans):
            if span.located and (span.end > len(self.output) or self.output[span.start:span.end] != span.text):
                raise ValueError(f"spans.{index}: output[{span.start}:{span.end}] is not its text {span.text!r}")
        return self

    @field_validator("judgment")
    @classmethod
    def _judgment_text_not_blank(cls, judgment: str | None) -> str | None:
        if judgment is not None and not judgment.strip():
            raise ValueError("empty text (a positive judgment is null)")
        return judgment


def read_records(path: Path) -> list[tuple[str, Any]]:
    """Every raw record of a .json (a list), .jsonl or .parquet file, each with its place in
    the file for error messages: "record 3", or "record 3 (line 5)" in JSON Lines.

    Raises `CutFormatError` naming the file (and the record) when the file cannot be decoded.
    """
    readers = {".json": _json_list_items, ".jsonl": _json_lines_items, ".parquet": _parquet_items}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise CutFormatError(f"{path}: unknown format; expected one of {', '.join(SUFFIXES)}")
    if not path.exists():
        raise CutFormatError(f"{path}: no such file")
    if not path.is_file():
        raise CutFormatError(f"{path}: not a regular file (a directory, FIFO or device cannot be read as records)")
    try:
        return list(reader(path))
    except RecursionError:
        raise CutFormatError(f"{path}: JSON nested too deeply to read") from None


def read_cut_records(path: Path) -> list[CutRecord]:
    """Every record of a .json, .jsonl or .parquet file, validated; raises `CutFormatError`."""
    return [_validated(path, place, item) for place, item in read_records(path)]


def _validated(path: Path, place: str, item: Any) -> CutRecord:
    if not isinstance(item, dict):
        raise CutFormatError(f"{path}: {place}: expected an object, got {type(item).__name__}")
    try:
        return CutRecord.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
        raise CutFormatError(f"{path}: {place}: {problems}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CutFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _line_and_column(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line} column {pos - text.rfind(chr(10), 0, pos)}"


def _json_list_items(path: Path) -> Iterator[tuple[str, Any]]:
    """Decode a JSON list one element at a time, so a syntax error is pinned to its record."""
    text = _read_text(path)
    decoder = json.JSONDecoder()
    pos = _JSON_WHITESPACE.match(text, 0).end()
    if text[pos : pos + 1] != "[":
        raise CutFormatError(f"{path}: expected a JSON list of records at {_line_and_column(text, pos)}")
    pos = _JSON_WHITESPACE.match(text, pos + 1).end()
    number = 0
    while text[pos : pos + 1] != "]":
        number += 1
        if number > 1:
            if text[pos : pos + 1] != ",":
                raise CutFormatError(
                    f"{path}: record {number}: invalid JSON: expected ',' or ']' at {_line_and_column(text, pos)}"
                )
            pos = _JSON_WHITESPACE.match(text, pos + 1).end()
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise CutFormatError(
                f"{path}: record {number}: invalid JSON: {exc.msg} at {_line_and_column(text, exc.pos)}"
            ) from None
        yield f"record {number}", item
        pos = _JSON_WHITESPACE.match(text, pos).end()
    if text[pos + 1 :].strip():
        raise CutFormatError(f"{path}: unexpected text after the list at {_line_and_column(text, pos + 1)}")


def _json_lines_items(path: Path) -> Iterator[tuple[str, Any]]:
    number = 0
    # Only "\n" ends a line: str.splitlines() also splits at U+2028 and U+0085, which JSON leaves unescaped.
    for line_number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        number += 1
        place = f"record {number} (line {line_number})"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CutFormatError(f"{path}: {place}: invalid JSON: {exc.msg} at column {exc.colno}") from None
        yield place, item


def _parquet_items(path: Path) -> Iterator[tuple[str, Any]]:
    # Imported here so that readers of JSON files (cut/ among them) never load DuckDB.
    import duckdb

    # to_json keeps each column's type (an int id stays an int) and embeds JSON columns as JSON.
    db = duckdb.connect()
    try:
        rows = db.execute("SELECT to_json(t) FROM read_parquet(?) AS t", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise CutFormatError(f"{path}: not a readable Parquet file: {exc}") from None
    finally:
        db.close()
    for number, (row,) in enumerate(rows, start=1):
        yield f"record {number}", json.loads(row)


def write_records(path: Path, records: Sequence[dict[str, Any]], *, format: RecordFormat) -> None:
    """Write records as a JSON list (indented like the paper's files), JSON Lines or Parquet, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    try:
        if format == "json":
            partial.write_text(json.dumps(list(records), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        elif format == "jsonl":
            partial.write_text(lines, encoding="utf-8")
        else:
            import duckdb

            with tempfile.TemporaryDirectory() as scratch:
                source = Path(scratch) / "records.jsonl"
                source.write_text(lines, encoding="utf-8")
                with duckdb.connect() as db:
                    db.execute(f"COPY (SELECT * FROM read_json('{_sql_string(source)}', format = 'newline_delimited')) "
                               f"TO '{_sql_string(partial)}' (FORMAT parquet)")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")
