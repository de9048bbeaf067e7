"""The results file the experiment writes: its table, one line per objective, and the notes kept."""

from __future__ import annotations

from pathlib import Path

from cut.config import OBJECTIVES
from online_cut.experiment import ObjectiveResult, write_results


def test_results_explain_every_objective_in_one_line_and_keep_the_notes(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_text("# old\n\n## Notes\n\nMeasured figures stay.\n")
    results = [ObjectiveResult(o, f"t-{o}", [0.25, 0.5], [3], 60.0) for o in ("cut", "dpo")]
    write_results(path, results, command="online-cut experiment", config_text="rounds: 1\n", wall_s=120.0,
                  seed=42, held_out=["addition"], n=4)
    text = path.read_text()
    explained = [line for line in text.splitlines() if line.startswith("- `")]
    assert [line.split("`")[1] for line in explained] == list(OBJECTIVES)
    assert "| dpo | 25.0% | 50.0% | 3 | 1.0 min |" in text
    assert text.endswith("## Notes\n\nMeasured figures stay.\n")
