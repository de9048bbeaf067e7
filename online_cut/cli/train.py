"""`online-cut train`: offline alignment of the configured base model on a file of triples."""

from __future__ import annotations

from pathlib import Path

import typer

from online_cut.cli.output import fail


def train(
    triples: Path = typer.Option(
        None,
        "--triples",
        help="triples to train on: the CUT paper's JSON list, JSONL or Parquet, records {instruction, input, output, "
        "judgment} with judgment null for a good response and text naming what is wrong otherwise",
    ),
    sql: str = typer.Option(
        None,
        "--sql",
        help="or: train on the rows of a read-only query of the store, with columns instruction, input, response, "
        "judgment, verdict (score optional), e.g. \"SELECT * FROM triples WHERE run = 'cut-paper'\"",
    ),
    db: Path = typer.Option(None, "--db", help="--sql: the DuckDB store (default: storage.db of the config)"),
    config: Path = typer.Option(
        ..., "--config", help="a YAML config; `model` picks the base model, `cut` the objective and hyper-parameters"
    ),
    out: Path = typer.Option(
        ..., "--out", help="folder for the PEFT adapter (adapter_config.json, adapter_model.safetensors) and its logs"
    ),
    init_adapter: Path = typer.Option(
        None, "--init-adapter", help="continue training this PEFT adapter folder instead of starting a fresh LoRA"
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="train on the first N triples of the file only (a quick trial)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an adapter already in --out"),
    objective: str = typer.Option(
        None, "--objective", help="override cut.objective: cut, sft, hindsight, forward (predict y, then its "
        "judgment), ilf (the configured sampler refines each negative given its judgment, the configured judge keeps "
        "the fine ones) or dpo (pairs of the same instruction's responses, a positive over a negative)",
    ),
    reduction: str = typer.Option(
        None, "--reduction", help="override cut.reduction: token, or example (the official CUT code's weighting)"
    ),
) -> None:
    """Train a LoRA adapter with CUT (or the `sft` / `hindsight` / `forward` / `ilf` / `dpo` baseline set by cut.objective).

    OUT receives the adapter, summary.json (rows trained, dropped as too long, and for dpo the pairs as triple indices), metrics.jsonl (one line per optimizer step: loss, l1, l2, flagged_frac, tokens_per_s; for dpo loss, reward_margin, reward_accuracy, pairs, tokens_per_s) and flagged.json (per negative triple, the tokens CUT flagged in training, on the row's first pass, with both probabilities); for ilf refinements.jsonl (per negative: its refinement, the judge's verdict and words, and whether it was trained on). A bad file stops the command before training.

    The triples come from a file (--triples) or from the store (--sql, read as `online-cut sql` reads it: a query
    that writes is refused); summary.json records the query and how many rows it returned.
    """
    from rich.console import Console
    from rich.table import Table

    from pydantic import ValidationError

    from cut import training_folder
    from cut.config import CutConfig
    from cut.data import load_triples
    from cut.trainer import train as train_adapter
    from online_cut.config import ConfigError, load_config
    from formats.triple_file import CutFormatError

    if (triples is None) == (sql is None):
        raise fail("give the triples to train on as one of --triples FILE and --sql QUERY")
    overrides = {k: v for k, v in (("objective", objective), ("reduction", reduction)) if v is not None}
    try:
        run_config = load_config(config)
        cut_config = CutConfig.model_validate({**run_config.cut.model_dump(), **overrides})
        loaded = (load_triples(triples) if sql is None else selected_triples(sql, db or run_config.storage.db, run_config))[:limit]
    except (ConfigError, CutFormatError) as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise fail(f"--objective/--reduction: {exc.errors()[0]['msg']}") from None
    if not loaded:
        raise fail(f"{triples}: no triple in the file" if sql is None else "--sql: the query returned no row")
    if init_adapter is not None and not (init_adapter / "adapter_config.json").is_file():
        raise fail(f"{init_adapter}: not a PEFT adapter folder (no adapter_config.json)")
    if out.exists() and any(out.iterdir()) and not (overwrite and (out / "adapter_config.json").is_file()):
        raise fail(f"{out}: exists and is not empty (pass --overwrite to replace an adapter there)")

    refinements = None
    if cut_config.objective == "ilf":
        from rounds.refine import refine_offline
        from tasks.judge_setup import configured_judge

        loaded, refinements = refine_offline(run_config, configured_judge(run_config.judge), loaded, init_adapter)
    try:
        result = train_adapter(cut_config, run_config.model.name_or_path(), loaded, out, init_adapter)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if result.processes > 1:
        typer.echo(f"training process {result.process_index} of {result.processes}: {len(result.steps)} steps done"
                   + ("; it writes the adapter" if result.main_process else ""), err=True)
    if not result.main_process:  # under `accelerate launch`, the main process writes and reports
        return
    training_folder.write_result(out, result, refinements=refinements,
                                 source=None if sql is None else {"sql": sql, "selected": len(loaded)})

    dpo = cut_config.objective == "dpo"
    metrics = ("loss", "reward_margin", "reward_accuracy") if dpo else ("loss", "l1", "l2")
    summary = Table(title=f"trained {cut_config.objective} adapter → {out}")
    for column in ("rows", "dropped (too long)", "steps", *metrics, "pairs" if dpo else "flagged tokens"):
        summary.add_column(column, justify="right")
    last = result.steps[-1]
    summary.add_row(
        str(result.rows),
        str(result.dropped),
        str(len(result.steps)),
        *(f"{last[k]:.4g}" for k in metrics),
        str(len(result.pairs) if dpo else sum(len(tokens) for tokens in result.flagged.values())),
    )
    Console().print(summary)


# What --sql must return to make triples of its rows; `score` is read too where the query has it.
SQL_COLUMNS = ("instruction", "input", "response", "judgment", "verdict")


def selected_triples(sql: str, db: Path, run_config) -> list:
    """The query's rows as triples, read through `online-cut sql`'s read-only path; every problem is a `fail`.
    `train --sql` and `check-detection --sql` read their triples here."""
    from pydantic import ValidationError

    from cut.data import Triple
    from formats.spans import Span
    from online_cut.cli.store import read_store

    result = read_store(sql, db, run_config.storage, what="--sql: ")
    missing = [c for c in SQL_COLUMNS if c not in result.columns]
    if missing:
        raise fail(f"--sql: the query returns no column {', '.join(missing)} (it returns {', '.join(result.columns)}); "
                   f"training needs {', '.join(SQL_COLUMNS)}")
    rows = [dict(zip(result.columns, row)) for row in result.rows]
    bad = next((n for n, row in enumerate(rows, start=1) if row["verdict"] not in ("positive", "negative")), None)
    if bad is not None:
        raise fail(f"--sql: row {bad} has verdict {rows[bad - 1]['verdict']!r}; a triple's is positive or negative")
    triples = []
    for number, row in enumerate(rows, start=1):
        try:
            spans = tuple(Span.model_validate(span) for span in row.get("spans") or ())
        except ValidationError as exc:
            raise fail(f"--sql: row {number}: spans: {exc.errors()[0]['msg']}") from None
        triples.append(Triple.judged(row["instruction"], row["input"] or "", row["response"], row["verdict"],
                                     row["judgment"], row.get("score"), spans))
    return triples
