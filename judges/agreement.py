"""How often two judges agree on the same responses: a person and an AI judge, an AI draft and its
review, two annotators (`online-cut judges agree`).

Verdicts are compared with Cohen's kappa, the agreement beyond what the two judges' own verdict
rates give by chance, with its large-sample 95 % interval (Cohen 1960: SE = √(p_o(1 − p_o) / n) /
(1 − p_e)); scores with Spearman's rank correlation (ties take their mean rank).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

VERDICTS = ("positive", "negative")
Z_95 = 1.959964


@dataclass(frozen=True)
class Agreement:
    n: int  # responses both judges judged
    agreed: int  # of them, with the same verdict
    kappa: float | None  # None where chance agreement is 1 (both judges gave one verdict throughout)
    kappa_low: float | None  # the 95 % interval, within [-1, 1]
    kappa_high: float | None
    confusion: dict[tuple[str, str], int]  # (verdict of a, verdict of b): responses
    scored: int  # responses both judges scored
    spearman: float | None  # None with fewer than 3 scored, or scores that do not vary

    @property
    def share(self) -> float:
        return self.agreed / self.n if self.n else float("nan")


def agreement(pairs: list[tuple[str, str]], scores: list[tuple[float, float]] = ()) -> Agreement:
    """The agreement of verdict pairs (a's, b's) on the same responses, and of score pairs where both scored."""
    n = len(pairs)
    confusion = Counter(pairs)
    agreed = sum(count for (a, b), count in confusion.items() if a == b)
    kappa = low = high = None
    if n:
        observed = agreed / n
        by_a, by_b = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
        chance = sum(by_a[v] * by_b[v] for v in VERDICTS) / n**2
        if chance < 1:
            kappa = (observed - chance) / (1 - chance)
            error = math.sqrt(observed * (1 - observed) / n) / (1 - chance)
            low, high = max(-1.0, kappa - Z_95 * error), min(1.0, kappa + Z_95 * error)
    return Agreement(n, agreed, kappa, low, high, {(a, b): confusion[(a, b)] for a in VERDICTS for b in VERDICTS},
                     len(scores), spearman(scores))


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation of the pairs: the Pearson correlation of their ranks."""
    if len(pairs) < 3:
        return None
    a, b = _ranks([x for x, _ in pairs]), _ranks([y for _, y in pairs])
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    spread = math.sqrt(sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b))
    return covariance / spread if spread else None


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, tied values sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in order[start : end + 1]:
            ranks[position] = (start + end) / 2 + 1
        start = end + 1
    return ranks
