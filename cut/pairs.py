"""Preference pairs from judged samples: DPO's data, drawn from the same prompt's responses.

Within one prompt, a response is preferred to another by the judge's score where both have
one, by the verdict (positive over negative) otherwise; ties never pair. Each response is
in at most one pair, so a round trains on each sample once, as the other objectives do.
The draw is seeded by the seed and the prompt alone, and a prompt's responses are ordered
by their content first, so the same triples give the same pairs in any order: a resumed
round trains on the pairs its first attempt chose.
"""

from __future__ import annotations

import random
from collections import defaultdict

from cut.data import Triple


def preference(a: Triple, b: Triple) -> int:
    """> 0: a is preferred, < 0: b is, 0: a tie (never a pair)."""
    if a.score is not None and b.score is not None:
        return (a.score > b.score) - (a.score < b.score)
    return b.negative - a.negative


def preference_pairs(triples: list[Triple], seed: int) -> list[tuple[int, int]]:
    """(chosen, rejected) indices into `triples`: disjoint pairs of the same prompt's responses."""
    by_prompt: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, triple in enumerate(triples):
        by_prompt[(triple.instruction, triple.input)].append(index)
    pairs = []
    for prompt in sorted(by_prompt):
        order = sorted(by_prompt[prompt], key=lambda i: (triples[i].response, triples[i].judgment or "", triples[i].score or 0))
        random.Random(f"{seed}\0{prompt[0]}\0{prompt[1]}").shuffle(order)
        paired: set[int] = set()
        for position, a in enumerate(order):
            if a in paired:
                continue
            b = next((b for b in order[position + 1 :] if b not in paired and preference(triples[a], triples[b])), None)
            if b is not None:
                paired |= {a, b}
                pairs.append((a, b) if preference(triples[a], triples[b]) > 0 else (b, a))
    return pairs
