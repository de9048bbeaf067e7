"""`online-cut annotate export | import`: people judge a run's responses outside the Prefect UI (a spreadsheet,
an annotation tool) and the round takes their judgments as if given in its forms (docs/people.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from online_cut.cli.output import fail

annotate_app = typer.Typer(help="Judge a run's responses outside the Prefect UI: export them, import the judgments.",
                           no_args_is_help=True)
DB_HELP = "the DuckDB store (default: storage.db, .online-cut/store.duckdb)"


@annotate_app.command("export")
def export(
    run: str = typer.Option(..., "--run", help="the run whose responses to export"),
    round: int = typer.Option(None, "--round", min=1, help="only this round's responses (default: every round)"),
    out: Path = typer.Option(..., "--out", help="the JSON Lines file to write"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Write the responses of RUN that no person has judged yet, one JSON object a line: response_id, round,
    instruction, input, response, and where an AI judge judged it, its verdict and judgment as draft_*.
    Fill in annotator, verdict, judgment (required when negative), score (optional, 1-10) and quotes (optional,
    the wrong parts copied from the response) and bring the file back with `online-cut annotate import`."""
    from judges.human import PEOPLE
    from online_cut.cli.store import read_store

    found = read_store(
        "SELECT r.response_id, r.round, p.instruction, p.input, r.text AS response, d.judge AS draft_judge, "
        "d.verdict AS draft_verdict, d.judgment AS draft_judgment FROM responses r JOIN prompts p USING (prompt_id) "
        "LEFT JOIN judgments d ON d.response_id = r.response_id AND NOT starts_with(d.judge, ?) "
        "AND d.verdict <> 'failed' WHERE r.run = ? AND (? IS NULL OR r.round = ?) AND r.response_id NOT IN "
        "(SELECT response_id FROM judgments WHERE starts_with(judge, ?) AND verdict <> 'failed') "
        "QUALIFY row_number() OVER (PARTITION BY r.response_id ORDER BY d.created_at) = 1 "
        "ORDER BY r.round, r.response_id",
        db, params=[f"{PEOPLE}:", run, round, round, f"{PEOPLE}:"],
    )
    rows = [dict(zip(found.columns, row)) for row in found.rows]
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    partial.replace(out)
    typer.echo(f"{len(rows)} responses of run {run} no person has judged → {out}")


@annotate_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="JSON Lines: response_id, annotator, verdict, judgment, score, quotes"),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Store people's judgments of exported responses under human:<annotator>. Every line is checked first: an
    unknown response_id, a bad verdict, a negative without its judgment, a quote not in the response stop the
    import naming the line, and nothing is written."""
    from judges.cache import stored_judgment
    from judges.human import PEOPLE, Answer, PageRefused, page_judgments
    from judges.judgment import JudgeItem
    from online_cut.cli.store import storage_defaults
    from storage.store import Store

    path = db or storage_defaults().db
    if not path.is_file():
        raise fail(f"no store at {path}: pass --db")
    try:
        lines = [(number, line) for number, line in enumerate(file.read_text().splitlines(), 1) if line.strip()]
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    store = Store(path)
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(f"{file}: line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("response_id"), str):
            raise fail(f"{file}: line {number}: expected an object with a response_id")
        records.append((number, record))
    known = {row["response_id"]: row["text"] for row in store.query(
        "SELECT response_id, text FROM responses WHERE response_id IN (SELECT unnest(?::VARCHAR[]))",
        [[record["response_id"] for _, record in records]])}
    judgments = []
    for number, record in records:
        if record["response_id"] not in known:
            raise fail(f"{file}: line {number}: unknown response_id {record['response_id']!r} (not in {path})")
        item = JudgeItem(instruction="", response=known[record["response_id"]], response_id=record["response_id"])
        answer = Answer.given(*(record.get(field) for field in ("verdict", "judgment", "score", "quotes")))
        try:
            [judgment] = page_judgments([item], str(record.get("annotator") or "").strip(), [answer])
        except PageRefused as exc:
            reasons = "; ".join(reason.removeprefix("response 1: ") for reason in exc.reasons)
            raise fail(f"{file}: line {number}: {reasons}") from None
        judgments.append((number, stored_judgment(item.response_id, judgment.judge_id, judgment)))
    earlier = {(row["response_id"], row["judge"]): row for row in store.query(
        "SELECT response_id, judge, verdict, judgment, score FROM judgments WHERE starts_with(judge, ?) "
        "AND response_id IN (SELECT unnest(?::VARCHAR[]))", [f"{PEOPLE}:", [j.response_id for _, j in judgments]])}
    new = []
    for number, judgment in judgments:
        stored = earlier.get((judgment.response_id, judgment.judge))
        if stored is None:
            new.append(judgment)
        elif (stored["verdict"], stored["judgment"], stored["score"]) != (judgment.verdict, judgment.judgment,
                                                                           judgment.score):
            raise fail(f"{file}: line {number}: {judgment.judge} judged this response already, otherwise "
                       f"({stored['verdict']}: {stored['judgment']!r}); a stored judgment is never replaced")
    added = store.add_judgments(new)
    typer.echo(f"stored {added} judgments from {file} ({len(judgments) - added} were there already)")
