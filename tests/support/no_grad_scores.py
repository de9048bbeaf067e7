"""The rows' loss from a no-gradient pass (cut.scoring.score_rows), to compare with what the trainer reported."""

from __future__ import annotations

import math

from cut.scoring import RowScore


def mean_nll(scores: list[RowScore]) -> float:
    """L2 of the rows: mean −log p over every response token under the aligned contexts."""
    values = [-math.log(max(p, 1e-45)) for s in scores for p in s.p_aligned]
    return sum(values) / len(values)
