"""What a run shows in the Prefect UI: per-round tables, flagged tokens, progress, a plot, a link.

Everything is read back from the store, so a resumed run reports the same as an
uninterrupted one.
"""

from __future__ import annotations

import base64
import io
import itertools
import re
import unicodedata
from pathlib import Path

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
)
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.urls import url_for

from online_cut.plots import saved_figure
from rounds.context import RunContext

FLAGGED_EXAMPLES = 3


def artifact_key(*parts: object) -> str:
    """Prefect keys allow lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def round_row(ctx: RunContext, round: int) -> dict:
    """The round's figures: samples and the adapter check, verdicts, judge cost, training and evaluation,
    each step's seconds."""
    (summary,) = ctx.store.query("SELECT * FROM round_summary WHERE run = ? AND round = ?", [ctx.run, round])
    (training,) = ctx.store.query(
        "SELECT arg_max(l1, step) AS l1, arg_max(l2, step) AS l2, avg(flagged_frac) AS flagged_share "
        "FROM training_steps WHERE run = ? AND round = ?",
        [ctx.run, round],
    )
    checks = ctx.store.query(
        "SELECT verdict, noise_mean_abs FROM adapter_checks WHERE run = ? AND round = ? AND step = 'sample'",
        [ctx.run, round],
    )
    check = checks[0] if checks else {"verdict": None, "noise_mean_abs": None}  # None: the base model
    detections = ctx.store.query("SELECT precision, recall, f1 FROM detections WHERE run = ? AND round = ?",
                                 [ctx.run, round])
    detection = detections[0] if detections else {"precision": None, "recall": None, "f1": None}  # no span
    (truncated,) = ctx.store.query(
        "SELECT count(*) AS n FROM responses WHERE run = ? AND round = ? AND finish_reason = 'length'", [ctx.run, round])
    judges = ctx.store.query(
        "SELECT j.judge, count(*) AS n, count(*) FILTER (WHERE j.changed) AS changed, count(j.changed) AS reviewed "
        "FROM judgments j JOIN responses r USING (response_id) WHERE r.run = ? AND r.round = ? GROUP BY ALL "
        "ORDER BY j.judge", [ctx.run, round])
    reviewed = sum(j["reviewed"] for j in judges)
    return {
        "round": round,
        "samples": summary["responses"],
        "truncated": truncated["n"],  # samples cut off at max_tokens: trained without an end-of-sequence token
        # How far the sampler's scores of the adapter's fingerprint were from the trainer's, against the
        # engine's own noise, and the check's verdict (None: the base model).
        "fingerprint_max_abs": summary["fingerprint_max_abs"],
        "fingerprint_mean_abs": summary["fingerprint_mean_abs"],
        "engine_noise": check["noise_mean_abs"],
        "adapter_check": check["verdict"],
        "judged_by": ", ".join(f"{j['judge']} ({j['n']})" for j in judges),  # people as human:<name>
        "drafts_changed": sum(j["changed"] for j in judges) if reviewed else None,  # review: drafts people changed
        "positive_share": summary["positive_share"],
        "judge_failures": summary["failed"],
        "judge_cost_usd": summary["judge_cost_usd"],
        "train_loss": summary["last_loss"],
        "l1": training["l1"],
        "l2": training["l2"],
        "flagged_share": training["flagged_share"],
        # The contrast flags against the tokens the judges' spans blame (None: no span this round).
        "detection_precision": detection["precision"],
        "detection_recall": detection["recall"],
        "detection_f1": detection["f1"],
        "eval_incumbent": summary["eval_incumbent"],
        "eval_candidate": summary["eval_candidate"],
        "gate": summary["gate_decision"],
        "sample_s": summary["sample_s"],
        "judge_s": summary["judge_s"],
        "train_s": summary["train_s"],
        "eval_s": summary["eval_s"],
        "wall_s": summary["wall_s"],
        "overhead_s": summary["overhead_s"],
    }


def _round_floats(row: dict) -> dict:
    """Floats to 4 decimals; those below 0.001 (fingerprint distances) to 3 significant digits, not to 0."""
    return {k: _rounded(v) if isinstance(v, float) else v for k, v in row.items()}


def _rounded(value: float) -> float:
    return round(value, 4) if abs(value) >= 1e-3 else float(f"{value:.3g}")


def flagged_markdown(ctx: RunContext, round: int) -> str:
    """A few negative triples of the round with the tokens CUT flagged in bold, and beside them the tokens the
    judge's spans cover, so a person sees where the two differ."""
    from transformers import AutoTokenizer

    from cut.rows import blamed_tokens
    from formats.spans import Span

    examples = ctx.store.query(
        "SELECT t.response_id, t.instruction, t.response, t.judgment, t.spans, list(f.token_index) AS flagged "
        "FROM triples t JOIN flagged_tokens f USING (response_id) WHERE t.run = ? AND t.round = ? "
        "GROUP BY ALL ORDER BY t.response_id LIMIT ?",
        [ctx.run, round, FLAGGED_EXAMPLES],
    )
    lines = [f"# Round {round}: tokens CUT flagged", ""]
    if not examples:
        return "\n".join(lines + ["No negative triple had a flagged token this round."])
    tokenizer = AutoTokenizer.from_pretrained(ctx.base_model)
    for example in examples:
        encoded = tokenizer(example["response"], add_special_tokens=False, return_offsets_mapping=True)
        spans = tuple(Span.model_validate(span) for span in example["spans"] or ())
        lines += [
            f"**Instruction:** {plain_markdown(example['instruction'])}",
            "",
            f"**Judgment:** {plain_markdown(example['judgment'])}",
            "",
            f"**Response** (flagged tokens in bold): {_marked(tokenizer, encoded.input_ids, set(example['flagged']))}",
            "",
        ]
        if spans:
            blamed = set(blamed_tokens(encoded.offset_mapping, spans) or ())
            unlocated = sum(not span.located for span in spans)
            lines += [f"**Response** (tokens the judge's spans cover in bold): "
                      f"{_marked(tokenizer, encoded.input_ids, blamed)}"
                      + (f" — {unlocated} quote(s) not found in the response" if unlocated else ""), ""]
        lines.append("---")
    return "\n".join(lines)


def _marked(tokenizer, ids: list[int], marked: set[int]) -> str:
    """The response's tokens as inline markdown, the runs of `marked` token indices in bold."""
    runs = itertools.groupby(enumerate(ids), key=lambda item: item[0] in marked)
    return bold_markdown([(tokenizer.decode([token for _, token in items]), is_marked) for is_marked, items in runs])


def publish_round(ctx: RunContext, round: int) -> None:
    create_table_artifact(
        key=artifact_key(ctx.run, "round", round),
        table=[_round_floats(round_row(ctx, round))],
        description=f"Run {ctx.run}, round {round}: samples, the sampled adapter's fingerprint distance, "
        "judgments, training, evaluation, seconds per step",
    )
    create_markdown_artifact(
        key=artifact_key(ctx.run, "flagged", round),
        markdown=flagged_markdown(ctx, round),
        description=f"Run {ctx.run}, round {round}: negative triples with the tokens CUT pushed down",
    )


def publish_attempts(run: str, this: FlowRun, attempts: list[FlowRun]) -> None:
    """A resumed run's attempts, linked to their flow runs, so the killed ones are one click away."""
    create_markdown_artifact(
        key=artifact_key(run, "attempts"),
        markdown=attempts_markdown(run, this, attempts),
        description=f"Run {run}: the flow runs that ran it, oldest first",
    )


def attempts_markdown(run: str, this: FlowRun, attempts: list[FlowRun]) -> str:
    lines = [f"# Run {plain_markdown(run)}: {len(attempts)} attempts", "", "| attempt | state | started |", "|---|---|---|"]
    for attempt in attempts:
        name = plain_markdown(attempt.name) + (" (this one)" if attempt.id == this.id else "")
        link = url_for(attempt) or f"/runs/flow-run/{attempt.id}"
        started = attempt.start_time or attempt.created
        lines.append(f"| [{name}]({link}) | {attempt.state_name} | {started:%Y-%m-%d %H:%M:%S %Z} |")
    return "\n".join(lines)


def publish_progress(ctx: RunContext, round: int) -> None:
    create_progress_artifact(
        key=artifact_key(ctx.run, "progress"),
        progress=100.0 * round / ctx.config.rounds,
        description=f"Run {ctx.run}: rounds done",
    )


def metrics_plot_png(rows: list[dict]) -> bytes:
    """Positive share, held-out score and training loss over rounds, as a PNG."""
    rounds = [r["round"] for r in rows]
    buffer = io.BytesIO()
    with saved_figure(buffer, dpi=100, ncols=2, figsize=(9, 3.4)) as (figure, (left, right)):
        for key, label in (("positive_share", "positive share (judge)"),
                           ("eval_candidate", "held-out score (candidate)"),
                           ("eval_incumbent", "held-out score (incumbent)")):
            left.plot(rounds, [r[key] for r in rows], marker="o", label=label)
        left.set(xlabel="round", ylim=(0, 1), title="judgments and held-out score")
        left.legend(fontsize=8)
        for key in ("train_loss", "l1", "l2"):
            right.plot(rounds, [r[key] for r in rows], marker="o", label=key)
        right.set(xlabel="round", title="training loss (last step)")
        right.legend(fontsize=8)
        for axis in (left, right):
            axis.set_xticks(rounds)
    return buffer.getvalue()


def publish_run(ctx: RunContext) -> None:
    rounds = [r["round"] for r in ctx.store.query("SELECT round FROM rounds WHERE run = ? AND status = 'done' ORDER BY round", [ctx.run])]
    rows = [round_row(ctx, r) for r in rounds]
    png = metrics_plot_png(rows)
    plot_path = ctx.config.storage.exports_dir / ctx.run / "metrics.png"
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot_path.write_bytes(png)
    create_markdown_artifact(
        key=artifact_key(ctx.run, "metrics"),
        markdown=f"# Run {ctx.run}\n\n![metrics over rounds](data:image/png;base64,{base64.b64encode(png).decode()})\n",
        description=f"Run {ctx.run}: metrics over rounds (also at {plot_path})",
    )
    live = ctx.live_adapter()
    if live is not None:
        create_link_artifact(
            key=artifact_key(ctx.run, "adapter"),
            link=Path(live.path).resolve().as_uri(),
            link_text=f"promoted adapter {live.adapter_id}",
            description=f"Run {ctx.run}: the live adapter after the last round",
        )


def plain_markdown(text: str) -> str:
    """`text` as inline markdown that renders as itself."""
    return bold_markdown([(text, False)])


def bold_markdown(pieces: list[tuple[str, bool]]) -> str:
    """The pieces' text as inline markdown that renders as itself, the pieces marked True in bold.

    Every ASCII punctuation character is escaped, so nothing in the text (`*`, `_`, a backtick,
    `[`, `<`, `#`, `1.` at a line's start) becomes markup, and line breaks are hard breaks, so a
    blank line in the text cannot end the paragraph and leave a `**` open."""
    lines: list[list[tuple[str, bool]]] = [[]]
    for text, bold in pieces:
        for index, part in enumerate(_LINE_BREAK.split(text)):
            if index:
                lines.append([])
            lines[-1].append((part, bold))
    # A hard break before nothing but blank lines would end the paragraph and print its `\`.
    while len(lines) > 1 and not "".join(text for text, _ in lines[-1]).strip():
        lines.pop()
    return "\\\n".join("".join(_bold(text) if bold else _escaped(text) for text, bold in line) for line in lines)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ASCII_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
# Invisible; written inside a `**` next to punctuation. CommonMark opens bold before punctuation
# only after a space or punctuation, and closes it after punctuation only before one, so
# "through**. Combine**" prints its markers; "through**\u2060. Combine**" is bold.
_WORD_JOINER = "\u2060"


def _escaped(text: str) -> str:
    return _ASCII_PUNCTUATION.sub(lambda match: "\\" + match.group(), text)


def _bold(text: str) -> str:
    """Markdown bold around a run of tokens; whitespace stays outside the markers, where markdown needs it."""
    core = text.strip()
    if not core:
        return text
    start = text.index(core)
    opening = "**" + (_WORD_JOINER if _is_punctuation(core[0]) else "")
    closing = (_WORD_JOINER if _is_punctuation(core[-1]) else "") + "**"
    return f"{text[:start]}{opening}{_escaped(core)}{closing}{text[start + len(core):]}"


def _is_punctuation(character: str) -> bool:
    """CommonMark's Unicode punctuation: general categories P and S."""
    return unicodedata.category(character)[0] in "PS"
