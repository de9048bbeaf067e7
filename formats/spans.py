"""Error spans: the parts of a response a judgment blames, quoted by the judge, located by us
(the bottom layer: judges locate them, the store keeps them, the trainer maps them to tokens).

A judge quotes what it blames (as MQM-style evaluators do: GEMBA-MQM, xCOMET): the exact
text, and where the same text occurs more than once, a few words around it (`context`) or
which occurrence it means (`occurrence`, from 1). The project never trusts offsets a judge
writes: `locate` finds each quote in the response itself, by exact match first, then after
normalising Unicode (NFKC) and whitespace on both sides, and returns character offsets into
the response as it is stored. A quote it cannot find is kept as unlocated (start and end
None), counted and shown, never dropped.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["minor", "major", "critical"]
# How many quotes a judgment may carry (the structured-output schema's maxItems too).
MAX_SPANS = 8
MAX_QUOTE_CHARS = 300


class SpanQuote(BaseModel):
    """What a judge blames, in its own words: a quote of the response."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    quote: str = Field(min_length=1, max_length=MAX_QUOTE_CHARS, description="the blamed text, copied from the response")
    context: str | None = Field(None, max_length=MAX_QUOTE_CHARS,
                                description="a few words of the response around the quote, where it occurs more than once")
    occurrence: int | None = Field(None, ge=1, description="which occurrence of the quote is meant, from 1")
    severity: Severity | None = None

    @field_validator("context", mode="before")
    @classmethod
    def _empty_context_is_none(cls, value: object) -> object:
        return None if value == "" else value  # a strict reply schema makes the judge write one


class Span(BaseModel):
    """A quote located in the response: `response[start:end]` (None, None: not found)."""

    model_config = ConfigDict(frozen=True)

    quote: str
    start: int | None = Field(None, ge=0)
    end: int | None = Field(None, ge=0)
    text: str | None = Field(None, description="response[start:end], None when unlocated")
    severity: Severity | None = None

    @property
    def located(self) -> bool:
        return self.start is not None

    @model_validator(mode="after")
    def _offsets_together(self) -> Span:
        if (self.start is None) != (self.end is None) or (self.start is not None and self.end <= self.start):
            raise ValueError(f"span offsets ({self.start}, {self.end}) must both be set with start < end, or both None")
        return self


def exact(response: str, start: int, end: int, severity: Severity | None = None) -> Span:
    """A span a rule critic knows exactly: `response[start:end]`."""
    return Span(quote=response[start:end], start=start, end=end, text=response[start:end], severity=severity)


def locate(response: str, quotes: list[SpanQuote]) -> list[Span]:
    """Each quote located in `response` (or unlocated), in the order given."""
    normalised, origin = _normalise_with_origin(response)
    return [_locate_one(response, normalised, origin, quote) for quote in quotes]


def _locate_one(response: str, normalised: str, origin: list[int], quote: SpanQuote) -> Span:
    found = _find(response, quote.quote, quote.context, quote.occurrence)
    if found is None:
        # Search the normalised text, then map its offsets back to the response's characters.
        context = None if quote.context is None else _normalise_with_origin(quote.context)[0]
        hit = _find(normalised, _normalise_with_origin(quote.quote)[0], context, quote.occurrence)
        if hit is not None:
            start, end = hit
            found = origin[start], origin[end - 1] + 1
    if found is None:
        return Span(quote=quote.quote, severity=quote.severity)
    start, end = found
    return Span(quote=quote.quote, start=start, end=end, text=response[start:end], severity=quote.severity)


def _find(text: str, quote: str, context: str | None, occurrence: int | None) -> tuple[int, int] | None:
    """The quote's offsets in `text`: inside the context when one is given (and found), else its
    `occurrence`-th match, else its first."""
    if not quote:
        return None
    starts = [m.start() for m in re.finditer(re.escape(quote), text)]
    if not starts:
        return None
    if context:
        around = text.find(context)
        if around >= 0:
            inside = [s for s in starts if around <= s and s + len(quote) <= around + len(context)]
            if inside:
                return inside[0], inside[0] + len(quote)
    if occurrence is not None:
        if occurrence > len(starts):
            return None
        return starts[occurrence - 1], starts[occurrence - 1] + len(quote)
    return starts[0], starts[0] + len(quote)


def _normalise_with_origin(text: str) -> tuple[str, list[int]]:
    """`text` in NFKC with every run of whitespace made one space, stripped at both ends, and for each
    character of the result the index of the character of `text` it came from."""
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for piece in unicodedata.normalize("NFKC", char):
            if piece.isspace():
                if not out or out[-1] == " ":
                    continue
                piece = " "
            out.append(piece)
            origin.append(index)
    if out and out[-1] == " ":
        out.pop()
        origin.pop()
    return "".join(out), origin
