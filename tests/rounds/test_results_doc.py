"""The results file the experiment writes: its tables, one line per objective, and the notes kept."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cut.config import OBJECTIVES
from rounds.results import ArmResult, mean_and_error, paired_difference, write_results


def _write(path: Path, results: list[ArmResult], n: int = 4) -> str:
    write_results(path, {"addition": results}, command="online-cut experiment", config_text="rounds: 1\n",
                  wall_s=120.0, seed=42, n=n)
    return path.read_text()


def test_results_explain_every_objective_in_one_line_and_keep_the_notes(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_text("# old\n\n## Notes\n\nMeasured figures stay.\n")
    results = [ArmResult(o, o, [f"t-{o}"], [[0.25, 0.5]], [[3]], 60.0) for o in ("cut", "dpo")]
    text = _write(path, results)
    explained = [line for line in text.splitlines() if line.startswith("- `")]
    assert [line.split("`")[1] for line in explained] == list(OBJECTIVES)
    # One repeat: the binomial spread of a share of 4 prompts, √(0.25 · 0.75 / 4) = 21.7 points.
    assert "| dpo | 25.0% ± 21.7 | 50.0% ± 25.0 | 3 | 1.0 min |" in text
    assert text.endswith("## Notes\n\nMeasured figures stay.\n")


def test_a_rewrite_keeps_the_summary_above_the_run_and_the_notes_below(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    results = [ArmResult("cut", "cut", ["t-cut"], [[0.25, 0.5]], [[3]], 60.0)]
    _write(path, results)
    text = path.read_text().replace("## The run\n", "## Summary\n\nThe bar is not met.\n\n## The run\n")
    path.write_text(text + "## Notes\n\nTried λ 1.1.\n")
    rewritten = _write(path, [ArmResult("cut", "cut", ["t-cut"], [[0.25, 0.75]], [[3]], 60.0)])
    assert rewritten.index("## Summary\n\nThe bar is not met.\n\n## The run\n") < rewritten.index("| cut |")
    assert "75.0%" in rewritten and rewritten.count("## Summary") == rewritten.count("## The run") == 1
    assert rewritten.endswith("## Notes\n\nTried λ 1.1.\n")


def test_repeats_give_mean_and_standard_error_and_cuts_paired_differences(tmp_path: Path) -> None:
    cut = ArmResult("cut", "cut", ["t-cut", "t-cut-r2", "t-cut-r3"],
                          [[0.2, 0.5], [0.3, 0.6], [0.25, 0.7]], [[4], [6], [5]], 90.0)
    sft = ArmResult("sft", "sft", ["t-sft", "t-sft-r2", "t-sft-r3"],
                          [[0.2, 0.4], [0.3, 0.5], [0.25, 0.5]], [[4], [6], [5]], 60.0)
    text = _write(tmp_path / "results.md", [cut, sft], n=200)
    se_cut = math.sqrt(((0.5 - 0.6) ** 2 + 0 + (0.7 - 0.6) ** 2) / 2) / math.sqrt(3)
    assert f"| cut | 25.0% ± 2.9 | 60.0% ± {100 * se_cut:.1f} | 5 | 1.5 min |" in text
    # Differences 0.1, 0.1, 0.2: mean 13.3 points, sd 5.77 → standard error 3.3.
    assert "| cut − sft | +13.3 ± 3.3 |" in text
    assert "mean over the 3 repeats" in text
    assert "- wall time: 2.0 min for this command; the arms' rounds took 2.5 min as stored" in text


def test_every_cut_arm_is_paired_against_every_baseline_and_not_against_another_cut_arm(tmp_path: Path) -> None:
    scores = [[0.2, 0.5], [0.3, 0.6]]
    results = [ArmResult(arm, objective, [f"t-{arm}", f"t-{arm}-r2"], scores, [[4], [6]], 60.0)
               for arm, objective in (("cut", "cut"), ("cut-nr1", "cut"), ("sft", "sft"), ("dpo", "dpo"))]
    text = _write(tmp_path / "results.md", results, n=200)
    paired = [line.split(" |")[0] for line in text.splitlines() if " − " in line and line.startswith("| ")]
    assert paired == ["| cut − sft", "| cut − dpo", "| cut-nr1 − sft", "| cut-nr1 − dpo"]


def test_the_error_of_one_repeat_is_binomial_and_of_several_the_spread_of_the_repeats() -> None:
    assert mean_and_error([0.5], 100) == pytest.approx((0.5, 0.05))
    assert mean_and_error([0.4, 0.6], 100) == pytest.approx((0.5, 0.1))
    assert paired_difference([0.6], [0.5], 100) == pytest.approx((0.1, math.hypot(math.sqrt(0.24 / 100), 0.05)))
    assert paired_difference([0.6, 0.7], [0.5, 0.5], 100) == pytest.approx((0.15, 0.05))


def test_each_held_out_set_gets_its_own_table_and_the_first_its_plot(tmp_path: Path) -> None:
    in_suite = [ArmResult(o, o, [f"t-{o}"], [[0.25, 0.5]], [[3]], 60.0) for o in ("cut", "sft")]
    transfer = [ArmResult(o, o, [f"t-{o}"], [[0.5, 0.75]], [[3]], 60.0) for o in ("cut", "sft")]
    path = tmp_path / "results.md"
    write_results(path, {"sums": in_suite, "sums-transfer": transfer}, command="online-cut experiment",
                  config_text="rounds: 1\n", wall_s=120.0, seed=42, n=4)
    text = path.read_text()
    sums_section, transfer_section = text.split("### sums\n")[1].split("### sums-transfer\n")
    assert "| cut | 25.0% ± 21.7 | 50.0% ± 25.0 |" in sums_section
    assert "| cut | 50.0% ± 25.0 | 75.0% ± 21.7 |" in transfer_section
    assert "| cut − sft | +0.0 ±" in transfer_section
    assert "![held-out accuracy per round on sums](results.png)" in text
