"""Triples — (instruction, response, judgment) — read from the CUT paper's files, and class balance."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from formats.spans import Span
from formats.triple_file import read_cut_records


@dataclass(frozen=True)
class Triple:
    instruction: str
    input: str
    response: str
    judgment: str | None  # None: the response was judged fine (Align-P); text: what is wrong (Align-N)
    score: float | None = None  # the judge's score where it gives one (model judges: 1-10); DPO pairs by it
    positive_judgment: str | None = None  # the judge's words on a positive, if any; forward predicts them
    spans: tuple[Span, ...] = ()  # the parts of the response a negative judgment blames (`cut.detection`)
    truncated: bool = False  # the sampler cut the response off at max_tokens: it gets no end-of-sequence token

    @classmethod
    def judged(
        cls, instruction: str, input: str, response: str, verdict: str, judgment: str | None, score: float | None = None,
        spans: tuple[Span, ...] = (), truncated: bool = False,
    ) -> Triple:
        """A stored judged triple as training reads it: only a negative verdict's text is a judgment to learn from
        as j−, with its spans; a positive's text is kept apart, for forward to predict."""
        negative = verdict == "negative"
        return cls(instruction, input, response, judgment if negative else None, score,
                   positive_judgment=None if negative else judgment, spans=tuple(spans) if negative else (),
                   truncated=truncated)

    @property
    def negative(self) -> bool:
        return self.judgment is not None

    @property
    def prompt(self) -> str:
        """The task as the model sees it; the paper joins a non-empty input with a newline."""
        return f"{self.instruction}\n{self.input}" if self.input else self.instruction


def load_triples(path: Path | str) -> list[Triple]:
    """The triples of a CUT paper file (JSON list, JSONL or Parquet of {instruction, input, output, judgment});
    raises `CutFormatError` naming the file and record of the first bad one."""
    return [Triple(r.instruction, r.input, r.output, r.judgment, r.score, spans=tuple(r.spans) if r.judgment else (),
                   truncated=r.truncated)
            for r in read_cut_records(Path(path))]


def balanced_indices(
    triples: list[Triple], positive_ratio: float | None, negative_ratio: float | None, seed: int
) -> list[int]:
    """Indices of the triples to keep (ascending) after class balance.

    Positives are down-sampled to `positive_ratio` per negative, then negatives to
    `negative_ratio` per kept positive (the official repo's `downsample` is the first). None keeps a class whole; a class is never down-sampled against an empty other class.
    Indices come back in ascending order.
    """
    rng = random.Random(seed)
    positives = [i for i, t in enumerate(triples) if not t.negative]
    negatives = [i for i, t in enumerate(triples) if t.negative]
    keep_pos, keep_neg = positives, negatives
    if positive_ratio is not None and negatives:
        keep_pos = _sample(rng, positives, math.ceil(positive_ratio * len(negatives)))
    if negative_ratio is not None and positives:
        keep_neg = _sample(rng, negatives, math.ceil(negative_ratio * len(keep_pos)))
    return sorted(keep_pos + keep_neg)


def _sample(rng: random.Random, indices: list[int], at_most: int) -> list[int]:
    return indices if len(indices) <= at_most else rng.sample(indices, at_most)
