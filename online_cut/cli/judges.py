"""`online-cut judges agree`: how often two judges that judged the same responses agree."""

from __future__ import annotations

from pathlib import Path

import typer

from online_cut.cli.output import fail

judges_app = typer.Typer(help="Compare the judges that judged a run's responses.", no_args_is_help=True)


@judges_app.command("agree")
def agree(
    run: str = typer.Option(..., "--run", help="the run whose responses both judges judged"),
    a: str = typer.Option(None, "--a", help="one judge, as stored (rule:sums, human:ana, gpt-4o ...); default: "
                          "the run's two judges, where it has exactly two"),
    b: str = typer.Option(None, "--b", help="the other judge"),
    round: int = typer.Option(None, "--round", min=1, help="only this round's responses"),
    db: Path = typer.Option(None, "--db", help="the DuckDB store (default: storage.db, .online-cut/store.duckdb)"),
) -> None:
    """Verdict agreement, Cohen's kappa with its 95 % interval, the confusion table and the Spearman rank correlation
    of the scores, over the responses of RUN that both judges judged (failed judgments left out)."""
    from rich.console import Console
    from rich.table import Table

    from judges.agreement import VERDICTS, agreement
    from online_cut.cli.store import read_store

    where = "r.run = ? AND (? IS NULL OR r.round = ?)"

    def query(sql: str, *params: object) -> list[tuple]:
        return read_store(sql, db, params=[run, round, round, *params]).rows

    judged = query(f"SELECT j.judge, count(*) FROM judgments j JOIN responses r USING (response_id) WHERE {where} "
                   "AND j.verdict IN ('positive', 'negative') GROUP BY ALL ORDER BY 2 DESC, 1")
    counts = dict(judged)
    listed = ", ".join(f"{judge} ({n})" for judge, n in judged) or "none"
    if (a is None) != (b is None):
        raise fail("give both --a and --b, or neither")
    if a is None:
        if len(counts) != 2:
            raise fail(f"run {run!r} has {len(counts)} judges ({listed}): name two with --a and --b")
        a, b = sorted(counts)
    if a == b:
        raise fail(f"--a and --b are both {a!r}: name two judges")
    for option, judge in (("--a", a), ("--b", b)):
        if judge not in counts:
            raise fail(f"{option} {judge!r} judged none of the responses of run {run!r}; its judges: {listed}")
    rows = query(
        "SELECT ja.verdict, jb.verdict, ja.score, jb.score FROM judgments ja JOIN judgments jb USING (response_id) "
        f"JOIN responses r USING (response_id) WHERE {where} AND ja.judge = ? AND jb.judge = ? "
        "AND ja.verdict IN ('positive', 'negative') AND jb.verdict IN ('positive', 'negative')", a, b,
    )
    if not rows:
        raise fail(f"{a} and {b} judged no response of run {run!r} in common")
    found = agreement([(va, vb) for va, vb, _, _ in rows],
                      [(sa, sb) for _, _, sa, sb in rows if sa is not None and sb is not None])

    console = Console()
    summary = Table(title=f"{a} (a) against {b} (b) on run {run}" + ("" if round is None else f", round {round}"))
    for column in ("responses", "same verdict", "Cohen's kappa (95 % interval)", "scored by both", "Spearman of scores"):
        summary.add_column(column, justify="right")
    kappa = "—" if found.kappa is None else f"{found.kappa:.3f} ({found.kappa_low:.3f} to {found.kappa_high:.3f})"
    summary.add_row(str(found.n), f"{found.agreed} ({found.share:.1%})", kappa, str(found.scored),
                    "—" if found.spearman is None else f"{found.spearman:.3f}")
    console.print(summary)
    confusion = Table(title="verdicts: a's by row, b's by column")
    confusion.add_column("a \\ b")
    for verdict in VERDICTS:
        confusion.add_column(verdict, justify="right")
    for va in VERDICTS:
        confusion.add_row(va, *(str(found.confusion[(va, vb)]) for vb in VERDICTS))
    console.print(confusion)
