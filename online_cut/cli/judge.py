"""`online-cut judge`: annotate a JSONL file of responses with the configured judge."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from online_cut.cli.output import as_text, fail
from online_cut.logs import show_progress
from online_cut.watchdog import guard_children

if TYPE_CHECKING:
    from judges.judgment import JudgeItem


SOME_FAILED = 3  # the exit status when some records failed and the rest were judged


def judge(
    file: Path = typer.Argument(..., help="JSONL, one record a line (a JSON list or Parquet also reads): instruction, "
                                "input (optional), response (or output, as the CUT paper's files name it)"),
    config: Path = typer.Option(..., "--config", help="a YAML config; its `judge` section picks the judge"),
    out: Path = typer.Option(..., "--out", help="JSONL written with each record plus judgment, verdict, status, error and "
                             "spans (the parts of the response the judgment blames, with character offsets)"),
    base_url: str = typer.Option(None, "--base-url", help="override judge.base_url (an OpenAI-compatible server)"),
    model: str = typer.Option(None, "--model", help="override judge.model"),
    db: Path = typer.Option(
        None, "--db", help="a DuckDB store holding the judgment cache (default: no cache); judgments are kept there"
    ),
    mode: str = typer.Option(
        None, "--mode", help="override judge.mode: online, or batch (the OpenAI Batch API at half the price; needs --db, "
        "where the batch is recorded so a rerun polls it instead of paying again)"
    ),
) -> None:
    """Judge every response in FILE and write the records with their judgments to OUT.

    OUT is written once every record has a result (judged, or failed with its reason); a bad input line stops the command before anything is judged or written.

    Exit status: 0 when every record was judged; 1 on bad input or a judge that cannot start (nothing
    written); 3 when some records could not be judged (too long for the judge, refused, malformed
    replies): OUT then holds every record, the failed ones with status "failed" and their error.
    """
    from pydantic import ValidationError
    from tqdm import tqdm

    # The judges' own progress lines (a batch's status and counts while it is waited for) go to stderr.
    logging.basicConfig(format="%(message)s")
    show_progress()
    guard_children()  # a local critic's engine ends with this command

    from formats.triple_file import write_records
    from judges.cache import StoreJudgmentCache
    from judges.openai_batch import StoreBatchLedger
    from judges.openai_judge import MissingApiKey
    from online_cut.config import ConfigError, load_config
    from tasks.judge_setup import configured_judge

    try:
        judge_config = load_config(config).judge
    except ConfigError as exc:
        raise fail(str(exc)) from None
    overrides = {name: value for name, value in (("base_url", base_url), ("model", model), ("mode", mode)) if value is not None}
    try:
        judge_config = judge_config.model_validate({**judge_config.model_dump(), **overrides})
    except ValidationError as exc:
        raise fail("; ".join(f"judge.{'.'.join(map(str, e['loc'])) or 'mode'}: {e['msg']}" for e in exc.errors())) from None
    if judge_config.kind == "human":
        raise fail("judge.kind human: people judge in a run's Prefect UI, or judge a file and bring it in with "
                   "`online-cut annotate import`; this command runs an AI judge")
    if judge_config.mode == "batch" and db is None:
        raise fail("--mode batch needs --db: the batch is recorded there, so a rerun polls it instead of paying again")
    records, items = _read_records(file)

    cache = ledger = None
    if db is not None:
        from storage.store import Store

        cache, ledger = StoreJudgmentCache(Store(db)), StoreBatchLedger(Store(db))
    judge = configured_judge(judge_config, cache=cache, ledger=ledger)
    try:
        with tqdm(total=len(items), unit="item", desc=f"judging with {judge.judge_id}") as bar:
            judgments = judge.judge_many_sync(items, bar.update)
    except MissingApiKey as exc:
        raise fail(str(exc)) from None

    annotated = [
        {**record, "judgment": j.judgment, "verdict": j.verdict, "status": j.status, "error": j.error,
         "spans": [span.model_dump() for span in j.spans]}
        for record, j in zip(records, judgments)
    ]
    write_records(out, annotated, format="jsonl")
    _print_summary(judgments, out)
    if any(j.status == "failed" for j in judgments):
        raise typer.Exit(SOME_FAILED)


def _read_records(file: Path) -> tuple[list[dict[str, Any]], list[JudgeItem]]:
    """The file's records and what to judge in each, or an error naming the file and record (and
    line) of the first bad one."""
    from pydantic import ValidationError

    from judges.judgment import JudgeItem
    from formats.triple_file import CutFormatError, read_records

    try:
        raw_records = read_records(file)
    except CutFormatError as exc:
        raise fail(str(exc)) from None
    records, items = [], []
    for place, record in raw_records:
        if not isinstance(record, dict):
            raise fail(f"{file}: {place}: expected a JSON object, got {type(record).__name__}")
        fields = {k: record[k] for k in ("instruction", "input", "response", "metadata") if record.get(k) is not None}
        if "response" not in fields and isinstance(record.get("output"), str):  # the CUT paper's field name
            fields["response"] = record["output"]
        try:
            items.append(JudgeItem.model_validate(fields))
        except ValidationError as exc:
            problems = "; ".join(f"'{e['loc'][0]}': {e['msg']}" for e in exc.errors())
            raise fail(f"{file}: {place}: {problems}") from None
        records.append(record)
    if not records:
        raise fail(f"{file}: no records")
    return records, items


def _print_summary(judgments, out: Path) -> None:
    from rich.console import Console

    verdicts = Counter(j.verdict or "failed" for j in judgments)
    errors = Counter(j.error for j in judgments if j.status == "failed")
    tokens = sum(j.input_tokens + j.output_tokens for j in judgments if not j.cached)
    costs = [j.cost_usd for j in judgments if j.cost_usd is not None and not j.cached]
    cached = sum(j.cached for j in judgments)
    console = Console(stderr=True)
    console.print(
        f"{len(judgments)} judged → {as_text(str(out))}: {verdicts['positive']} positive, {verdicts['negative']} negative, "
        f"{verdicts['failed']} failed; {cached} from the cache; {tokens} tokens"
        + (f", ${sum(costs):.4f}" if costs else ""),
        highlight=False,
    )
    for error, count in errors.most_common(5):
        console.print(f"  failed ×{count}: {as_text(error)}", highlight=False)
