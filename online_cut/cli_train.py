"""`online-cut train`: offline alignment of the configured base model on a file of triples."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from online_cut.console import fail


def train(
    triples: Path = typer.Option(
        ...,
        "--triples",
        help="triples to train on: the CUT paper's JSON list, JSONL or Parquet, records {instruction, input, output, "
        "judgment} with judgment null for a good response and text naming what is wrong otherwise",
    ),
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
        None, "--objective", help="override cut.objective: cut, sft, hindsight or dpo (pairs of the same instruction's "
        "responses, a positive over a negative)",
    ),
    reduction: str = typer.Option(
        None, "--reduction", help="override cut.reduction: token, or example (the official CUT code's weighting)"
    ),
) -> None:
    """Train a LoRA adapter with CUT (or the `sft` / `hindsight` / `dpo` baseline set by cut.objective).

    OUT receives the adapter, summary.json (rows trained, dropped as too long, and for dpo the pairs as triple indices), metrics.jsonl (one line per optimizer step: loss, l1, l2, flagged_frac, tokens_per_s; for dpo loss, reward_margin, reward_accuracy, pairs, tokens_per_s) and flagged.json (per negative triple, the tokens CUT flagged before training, with both probabilities). A bad file stops the command before training.

    Selecting triples from the store (--sql) arrives with the storage integration.
    """
    from rich.console import Console
    from rich.table import Table

    from pydantic import ValidationError

    from cut.config import CutConfig
    from cut.data import load_triples
    from cut.trainer import train as train_adapter
    from online_cut.config import ConfigError, load_config
    from storage.cut_format import CutFormatError

    overrides = {k: v for k, v in (("objective", objective), ("reduction", reduction)) if v is not None}
    try:
        run_config = load_config(config)
        cut_config = CutConfig.model_validate({**run_config.cut.model_dump(), **overrides})
        loaded = load_triples(triples)[:limit]
    except (ConfigError, CutFormatError) as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise fail(f"--objective/--reduction: {exc.errors()[0]['msg']}") from None
    if not loaded:
        raise fail(f"{triples}: no triple in the file")
    if init_adapter is not None and not (init_adapter / "adapter_config.json").is_file():
        raise fail(f"{init_adapter}: not a PEFT adapter folder (no adapter_config.json)")
    if out.exists() and any(out.iterdir()) and not (overwrite and (out / "adapter_config.json").is_file()):
        raise fail(f"{out}: exists and is not empty (pass --overwrite to replace an adapter there)")

    try:
        result = train_adapter(cut_config, run_config.model.name_or_path(), loaded, out, init_adapter)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not result.main_process:  # under `accelerate launch`, the main process writes and reports
        return
    (out / "metrics.jsonl").write_text("".join(json.dumps(step) + "\n" for step in result.steps))
    flagged = {str(i): [asdict(token) for token in tokens] for i, tokens in result.flagged.items()}
    (out / "flagged.json").write_text(json.dumps(flagged, indent=1))
    (out / "summary.json").write_text(json.dumps({"rows": result.rows, "dropped": result.dropped, "pairs": result.pairs}))

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
