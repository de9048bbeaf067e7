"""`online-cut check-detection`: can the policy read the judgments? A preflight before training.

CUT's contrast detection flags a token of a negative response when the policy, given the
judgment, finds it likelier than without it. That works only if the model reads the judgment
in context. Judgments whose judge located the wrong parts (spans) tell how well it does: the
share of the span tokens the contrast flags (recall) and of the flagged tokens inside a span
(precision). Forward passes only, no training.
"""

from __future__ import annotations

import random
from pathlib import Path

import typer

from online_cut.cli.output import fail

# Below this recall most of what the judges blame would be trained *up* by the Misalign branch's MLE.
RECALL_FOR_CONTRAST = 0.5


def check_detection(
    config: Path = typer.Option(..., "--config", help="a YAML config: `model` is the policy, `cut` its λ and templates"),
    triples: Path = typer.Option(None, "--triples", help="triples with spans in the CUT paper's fields plus `spans`: "
                                 "JSON, JSONL or Parquet, as `online-cut export` writes them"),
    sql: str = typer.Option(None, "--sql", help="or: a read-only query of the store returning instruction, input, "
                            "response, judgment, verdict and spans, e.g. \"SELECT * FROM triples WHERE run = 'r'\""),
    db: Path = typer.Option(None, "--db", help="--sql: the DuckDB store (default: storage.db of the config)"),
    adapter: Path = typer.Option(None, "--adapter", help="score under this PEFT adapter on the base model"),
    sample: int = typer.Option(64, "--sample", min=1, help="how many negatives with located spans to score, at most"),
    seed: int = typer.Option(0, "--seed", help="which negatives are drawn when there are more"),
) -> None:
    """Score judged negatives that carry spans under the policy and print how well CUT's contrast detection
    finds the span tokens (recall, precision, F1), then the `cut.detection` to use.

    Exit status: 0 with a recommendation; 1 on bad input or when no negative has a located span.
    """
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cut.data import load_triples
    from cut.rows import build_rows
    from cut.scoring import detection, score_rows
    from formats.triple_file import CutFormatError
    from online_cut.cli.train import selected_triples
    from online_cut.config import ConfigError, load_config

    if (triples is None) == (sql is None):
        raise fail("give one of --triples FILE and --sql QUERY")
    try:
        run_config = load_config(config)
        loaded = load_triples(triples) if sql is None else selected_triples(sql, db or run_config.storage.db, run_config)
    except (ConfigError, CutFormatError) as exc:
        raise fail(str(exc)) from None
    with_spans = [t for t in loaded if t.negative and any(span.located for span in t.spans)]
    if not with_spans:
        raise fail(f"none of the {len(loaded)} triples is a negative whose judgment located a span: nothing to "
                   "measure (judge with a rule critic, or a model judge asked for spans)")
    chosen = random.Random(seed).sample(with_spans, min(sample, len(with_spans)))

    settings = run_config.cut.model_copy(update={"objective": "cut", "positive_ratio": None, "negative_ratio": None})
    base_model = run_config.model.name_or_path()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    rows = [row for row in build_rows(chosen, tokenizer, settings).rows if row.blamed is not None]
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype="float32")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tqdm(total=len(rows), unit="row", desc="scoring") as bar:
        scores = score_rows(model, rows, settings, pad_id, bar.update)
    found = detection(scores, rows)
    _report(found, settings.lam, base_model if adapter is None else f"{base_model} + {adapter}")


def _report(found, lam: float, model: str) -> None:
    recall, precision, f1 = (f"{v:.1%}" if v is not None else "n/a" for v in (found.recall, found.precision, found.f1))
    typer.echo(f"{model}, λ = {lam:g}: {found.rows} negatives, {found.span_tokens} tokens in the judges' spans, "
               f"{found.contrast_flagged} flagged by the contrast, {found.flagged_in_spans} of them in a span")
    typer.echo(f"contrast detection against the spans: recall {recall}, precision {precision}, F1 {f1}")
    if found.recall is None or found.recall < RECALL_FOR_CONTRAST:
        typer.echo(f"recommended: cut.detection: spans (the model flags under {RECALL_FOR_CONTRAST:.0%} of what the "
                   "judges blame; with contrast the rest of each wrong part is trained up)")
    else:
        typer.echo("recommended: cut.detection: contrast (the paper's; the model reads the judgments), or union "
                   "to push down the span tokens it misses as well")
