"""Two judges' agreement: kappa and its interval, Spearman, and `online-cut judges agree` on a store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from judges.agreement import agreement, spearman
from storage.records import Judgment, Prompt, Response
from storage.store import Store

ONLINE_CUT = str(Path(sys.executable).with_name("online-cut"))
# 10 responses: both positive 4, both negative 3, a positive where b is negative 2, the reverse 1.
PAIRS = ([("positive", "positive")] * 4 + [("negative", "negative")] * 3 + [("positive", "negative")] * 2
         + [("negative", "positive")])


def test_kappa_and_its_interval_are_the_hand_computed_ones() -> None:
    # p_o = 0.7; a says positive 6 times, b 5 times: p_e = (6·5 + 4·5) / 100 = 0.5; kappa = 0.2 / 0.5 = 0.4;
    # SE = √(0.7 · 0.3 / 10) / 0.5 = 0.28983.
    found = agreement(PAIRS)
    assert (found.n, found.agreed, found.share) == (10, 7, 0.7)
    assert found.kappa == pytest.approx(0.4)
    assert (found.kappa_low, found.kappa_high) == pytest.approx((0.4 - 1.959964 * 0.289828, 0.4 + 1.959964 * 0.289828),
                                                                abs=1e-5)
    assert found.confusion == {("positive", "positive"): 4, ("positive", "negative"): 2,
                               ("negative", "positive"): 1, ("negative", "negative"): 3}


def test_judges_that_never_vary_have_no_kappa_and_an_interval_stays_within_its_range() -> None:
    assert agreement([("positive", "positive")] * 5).kappa is None
    nearly_perfect = agreement([("positive", "positive")] * 3 + [("negative", "negative")] * 2 + [("positive", "negative")])
    assert nearly_perfect.kappa_high == 1.0 and -1.0 <= nearly_perfect.kappa_low < nearly_perfect.kappa


def test_spearman_is_the_hand_computed_rank_correlation_with_ties() -> None:
    assert spearman([(1, 2), (2, 1), (3, 4), (4, 3), (5, 5)]) == pytest.approx(0.8)  # 1 − 6 · 4 / (5 · 24)
    # ranks of a with a tie: 1.5, 1.5, 3 against 1, 2, 3: 1.5 / √(1.5 · 2)
    assert spearman([(1, 1), (1, 2), (2, 3)]) == pytest.approx(1.5 / 3**0.5)
    assert spearman([(1, 1), (2, 2)]) is None


def _store_with_two_judges(path: Path) -> None:
    store = Store(path)
    for index, (va, vb) in enumerate(PAIRS):
        prompt = Prompt(instruction=f"What is {index} + 1?")
        response = Response(run="r", round=1, prompt_id=prompt.prompt_id, text=str(index))
        with store.transaction() as tx:
            tx.add_prompts([prompt])
            tx.add_responses([response])
            tx.add_judgments([
                Judgment(response_id=response.response_id, judge="human:ana", verdict=va,
                         judgment=None if va == "positive" else "wrong", score=index + 1),
                Judgment(response_id=response.response_id, judge="rule:addition", verdict=vb,
                         judgment=None if vb == "positive" else "wrong", score=index + 1),
            ])


def test_judges_agree_prints_the_figures_for_the_runs_two_judges(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    _store_with_two_judges(db)
    result = subprocess.run([ONLINE_CUT, "judges", "agree", "--run", "r", "--db", str(db)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "human:ana (a) against rule:addition (b)" in text
    assert "7 (70.0%)" in text and "0.400 (-0.168 to 0.968)" in text and "1.000" in text  # same scores: Spearman 1

    unknown = subprocess.run([ONLINE_CUT, "judges", "agree", "--run", "r", "--db", str(db), "--a", "human:bo",
                              "--b", "rule:addition"], capture_output=True, text=True, timeout=120)
    assert unknown.returncode != 0
    assert "--a 'human:bo' judged none of the responses of run 'r'; its judges: human:ana (10), rule:addition (10)" in \
        " ".join(unknown.stderr.split())
