"""Rule critics for checkable tasks: instant, offline, and writing their judgments in words.

Each critic reads what to check from the item's metadata when the prompt suite put it
there, else from the instruction's wording:
- addition: metadata `a` and `b`, else "What is 47 + 38?" in the instruction;
- sums: metadata `pairs`, else every "a + b" in the instruction, one sum per part of the answer;
- format: metadata `max_words`, `case` ('lower' | 'upper') and/or `no_commas`, else "in at most
  10 words", "in lower case" / "in upper case" (also "lowercase", "all capitals"), "no commas" /
  "not use any commas" in the instruction.
"""

from __future__ import annotations

import re
from abc import abstractmethod

from formats.spans import Span, exact
from judges.base import Judge, Progress
from judges.judgment import JudgeItem, Judgment

_SUM = re.compile(r"(-?\d+)\s*\+\s*(-?\d+)")
_INTEGER = re.compile(r"-?\d+")

_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = {**{w: i for i, w in enumerate(_UNITS + _TEENS)}, **{w: 10 * i for i, w in enumerate(_TENS, 2)}}
_BELOW_HUNDRED = rf"(?:(?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_UNITS[1:])}))?|{'|'.join(_TEENS)}|{'|'.join(_UNITS)})"
# An integer or a number in words up to 999 ("eighty-five", "one hundred and two"), not the
# first operand of a further sum ("= 47 + 30 + 8 = 85" states 85, not 47).
_NUMBER = (rf"(?<![\w-])(?P<n>-?\d+|(?:(?:{'|'.join(_UNITS[1:])})\s+hundred(?:\s+(?:and\s+)?{_BELOW_HUNDRED})?|{_BELOW_HUNDRED}))"
           r"\b(?!\s*(?:[+*/×]|-\s*\d))")
_EQUATION = re.compile(rf"(?P<a>-?\d+)\s*\+\s*(?P<b>-?\d+)\s*=\s*{_NUMBER}", re.IGNORECASE)
# A number ending the response, unless it ends an echoed sum ("... 47 and 38").
_NOT_AFTER_AN_OPERATOR = "(?<![+\\s])" + "".join(rf"(?<!\b{word})" for word in ("and", "plus", "to", "of", "with", "add"))
# Where a response states an answer: after '=', after "the answer is", before "is the sum",
# at its end ("... makes 86."), or as the whole response.
_STATEMENTS = [
    re.compile(rf"=\s*{_NUMBER}", re.IGNORECASE),
    re.compile(rf"\b(?:answer|sum|total|result)\s*(?:is|equals|=)?\s*:?\s*{_NUMBER}", re.IGNORECASE),
    re.compile(rf"{_NUMBER}\s+is\s+the\s+(?:answer|sum|total|result)\b", re.IGNORECASE),
    re.compile(rf"{_NOT_AFTER_AN_OPERATOR}\s+{_NUMBER}[\s.!]*$", re.IGNORECASE),
    re.compile(rf"^\s*{_NUMBER}[\s.!]*$", re.IGNORECASE),
]
_MAX_WORDS = re.compile(r"(?:at most|no more than|up to|fewer than|under)\s+(\d+)\s+words", re.IGNORECASE)
_LOWER = re.compile(r"\blower[- ]?case\b", re.IGNORECASE)
_UPPER = re.compile(r"\b(?:upper[- ]?case|all capitals|all caps)\b", re.IGNORECASE)
_NO_COMMAS = re.compile(r"\b(?:no|not use any|without)\s+commas\b", re.IGNORECASE)
_WORD = re.compile(r"\S+")


class RuleCritic(Judge):
    """A critic whose score is the share of what it checks that is right (parts of an answer, constraints)."""

    def __init__(self, name: str) -> None:
        super().__init__(judge_id=f"rule:{name}")

    async def _judge_fresh(self, items: list[JudgeItem], progress: Progress) -> list[Judgment]:
        judgments = [self.judge_one(item) for item in items]
        progress(len(judgments))
        return judgments

    @abstractmethod
    def judge_one(self, item: JudgeItem) -> Judgment: ...

    def _verdict(self, positive: bool, text: str, score: float | None = None, spans: list[Span] = ()) -> Judgment:
        return Judgment(
            status="ok", verdict="positive" if positive else "negative", judgment=text, score=score,
            spans=tuple(spans), judge_id=self.judge_id,
        )


class AdditionCritic(RuleCritic):
    """Checks the answer to a two-digit addition. The answer is read only where the response
    states one (`_stated_answer`), never from an operand it echoes ("47 + 38 is a sum"
    states none), and may be written in words ("eighty-five").

    A negative judgment quotes the response, as a human or GPT-4 judge quotes what it
    blames: CUT flags the tokens a judgment makes likelier, and quoting makes the blamed
    tokens likelier (docs/results.md measures the flagged share with and without a quote).
    Its span is the stated wrong number."""

    def __init__(self) -> None:
        super().__init__("addition")

    def judge_one(self, item: JudgeItem) -> Judgment:
        operands = _operands(item)
        if operands is None:
            return Judgment.failed(self.judge_id, "no addition problem in the item's metadata or instruction")
        a, b = operands
        total = a + b
        equation = f"{a} + {b} = {total}"
        stated = _stated_answer(item.response, operands)
        quoted = _quote(item.response)
        if stated is None:
            return self._verdict(False, f"The response {quoted} gives no number; {equation}.", 0.0)
        answer, start, end = stated
        if answer != total:
            return self._verdict(False, f"The response {quoted} is incorrect: {equation}, not {answer}.", 0.0,
                                 [exact(item.response, start, end, "major")])
        return self._verdict(True, f"The response is correct: {equation}.", 1.0)


def _operands(item: JudgeItem) -> tuple[int, int] | None:
    meta = item.metadata
    if "a" in meta and "b" in meta:
        return int(meta["a"]), int(meta["b"])
    match = _SUM.search(f"{item.instruction} {item.input}")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _quote(response: str, limit: int = 120) -> str:
    text = " ".join(response.split())
    return f'"{text if len(text) <= limit else text[: limit - 1] + "…"}"'


def _stated_answer(response: str, operands: tuple[int, int]) -> tuple[int, int, int] | None:
    """The number the response gives as the sum and where it stands (value, start, end): in its last
    restatement of the question's sum ("47 + 38 = 85"), else in its last statement of an answer anywhere."""
    restated = [m for m in _EQUATION.finditer(response) if sorted((int(m["a"]), int(m["b"]))) == sorted(operands)]
    statements = [m for pattern in _STATEMENTS for m in pattern.finditer(response)]
    if not restated and not statements:
        return None
    found = restated[-1] if restated else max(statements, key=lambda m: m.start("n"))
    return _number(found["n"]), found.start("n"), found.end("n")


def _number(text: str) -> int:
    if _INTEGER.fullmatch(text):
        return int(text)
    value = 0
    for word in re.split(r"[\s-]+", text.lower()):
        if word == "hundred":
            value *= 100
        elif word != "and":
            value += _NUMBER_WORDS[word]
    return value


class SumsCritic(RuleCritic):
    """Checks an answer of several sums, one per pair, separated by commas (or semicolons or lines).

    Part i of the response answers pair i, its number read as the addition critic reads one
    (`_stated_answer`: after '=', never an echoed operand). The verdict is positive only when
    every part is right; the score is the share of parts right; a negative judgment names each
    wrong part with its right value and quotes only that part, so CUT flags the wrong sums and
    not the right ones. Its spans are each wrong part's number (the whole part where it states
    none, and each part beyond the pairs).
    """

    def __init__(self) -> None:
        super().__init__("sums")

    def judge_one(self, item: JudgeItem) -> Judgment:
        pairs = _pairs(item)
        if not pairs:
            return Judgment.failed(self.judge_id, "no sums in the item's metadata or instruction")
        parts = [(m.group(), m.start()) for m in _PART.finditer(item.response)]
        problems, spans = [], []
        for index, (a, b) in enumerate(pairs):
            equation = f"{a} + {b} = {a + b}"
            if index >= len(parts):
                problems.append(f"there is no sum for {a} + {b} ({equation})")
                continue
            part, offset = parts[index]
            stated = _stated_answer(part, (a, b))
            if stated is None:
                problems.append(f"{_quote(part, 60)} gives no number for {a} + {b} ({equation})")
                spans.append(exact(item.response, offset, offset + len(part), "major"))
            elif stated[0] != a + b:
                problems.append(f"{_quote(part, 60)} is wrong: {equation}")
                spans.append(exact(item.response, offset + stated[1], offset + stated[2], "major"))
        right = len(pairs) - len(problems)
        if len(parts) > len(pairs):
            problems.append(f"it gives {len(parts)} parts for {len(pairs)} pairs")
            spans += [exact(item.response, offset, offset + len(part), "minor") for part, offset in parts[len(pairs):]]
        score = right / max(len(pairs), len(parts))  # a part beyond the pairs counts as a wrong one
        if problems:
            text = f"{right} of {len(pairs)} sums {'is' if right == 1 else 'are'} right; {_join(problems)}."
            return self._verdict(False, text[0].upper() + text[1:], score, spans)
        return self._verdict(True, f"All {len(pairs)} sums are right: {', '.join(str(a + b) for a, b in pairs)}.", score)


# A part of the answer: what stands between commas, semicolons or line breaks, without its outer spaces.
_PART = re.compile(r"[^,;\n\s](?:[^,;\n]*[^,;\n\s])?")


def _pairs(item: JudgeItem) -> list[tuple[int, int]]:
    if "pairs" in item.metadata:
        return [(int(a), int(b)) for a, b in item.metadata["pairs"]]
    return [(int(a), int(b)) for a, b in _SUM.findall(f"{item.instruction} {item.input}")]


class FormatCritic(RuleCritic):
    """Checks format constraints: a word limit and/or the letter case. Its spans are the offending
    commas, the words past the limit and the words in the wrong case."""

    def __init__(self) -> None:
        super().__init__("format")

    def judge_one(self, item: JudgeItem) -> Judgment:
        max_words, case, no_commas = _format_constraints(item)
        if max_words is None and case is None and not no_commas:
            return Judgment.failed(self.judge_id, "no format constraint in the item's metadata or instruction")
        problems, strengths, spans = [], [], []
        words = list(_WORD.finditer(item.response))
        if no_commas:
            commas = [m.start() for m in re.finditer(",", item.response)]
            if commas:
                problems.append(f"it uses {len(commas)} comma{'s' if len(commas) > 1 else ''}")
                spans += [exact(item.response, at, at + 1, "minor") for at in commas]
            else:
                strengths.append("it uses no commas")
        if max_words is not None:
            if len(words) > max_words:
                problems.append(f"it has {len(words)} words, more than the limit of {max_words}")
                spans.append(exact(item.response, words[max_words].start(), words[-1].end(), "major"))
            else:
                strengths.append(f"it keeps to the limit of {max_words} words ({len(words)})")
        if case is not None:
            offending = [w for w in words if w.group() != (w.group().lower() if case == "lower" else w.group().upper())]
            if offending:
                shown = ", ".join(f"'{w.group()}'" for w in offending[:3]) + (" and more" if len(offending) > 3 else "")
                kind = "capital" if case == "lower" else "lower-case"
                problems.append(f"it is not all {case} case ({shown} {'has' if len(offending) == 1 else 'have'} {kind} letters)")
                spans += [exact(item.response, w.start(), w.end(), "minor") for w in offending]
            else:
                strengths.append(f"it is all {case} case")
        score = len(strengths) / (len(strengths) + len(problems))
        if problems:
            right = f"; {_join(strengths)}" if strengths else ""
            return self._verdict(False, f"The response breaks the format: {_join(problems)}{right}.", score,
                                 sorted(spans, key=lambda span: span.start))
        return self._verdict(True, f"The response follows the format: {_join(strengths)}.", score)


def _format_constraints(item: JudgeItem) -> tuple[int | None, str | None, bool]:
    meta = item.metadata
    max_words = meta.get("max_words")
    case = meta.get("case")
    if max_words is None and (match := _MAX_WORDS.search(item.instruction)):
        max_words = int(match.group(1))
    if case is None:
        case = "lower" if _LOWER.search(item.instruction) else "upper" if _UPPER.search(item.instruction) else None
    no_commas = bool(meta.get("no_commas")) or bool(_NO_COMMAS.search(item.instruction))
    return (int(max_words) if max_words is not None else None), case, no_commas


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
