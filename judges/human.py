"""People as judges (`judge.kind: human | review`): a page of responses as a form, and a person's
answers to it checked and turned into judgments (flows/people.py asks for them in the Prefect UI;
`online-cut annotate import` reads them from a file).

A person's judgments are stored under `human:<their name>`; the round trains on every person's
(`judged_by(judge, PEOPLE)`). In review mode each response comes with the AI judge's draft, the
form is filled in with it, and what the person submits is stored beside the draft, with whether
it changed anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from formats.spans import MAX_QUOTE_CHARS, MAX_SPANS, SpanQuote, locate
from judges.judgment import JudgeItem, Judgment

PEOPLE = "human"  # the judge id a round of people trains on: every `human:<name>`
SCORES = ("", *map(str, range(1, 11)))  # the form's score: a choice, none by default
ANNOTATOR = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_JUDGMENT_CHARS = 4000


def person(annotator: str) -> str:
    """The judge id a person's judgments are stored under."""
    return f"{PEOPLE}:{annotator}"


def judged_by(judge: str, selector: str) -> bool:
    """Whether a judgment stored under `judge` is one the round's `selector` trains on: the same judge, or, for
    `PEOPLE`, any person."""
    return judge == selector or (selector == PEOPLE and judge.startswith(PEOPLE + ":"))


class PageRefused(ValueError):
    """A page's answers that cannot be stored as they are; `reasons` say what to change, per response."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class Answer:
    """What a person said of one response."""

    verdict: str
    judgment: str
    score: int | None
    quotes: list[str]

    @classmethod
    def given(cls, verdict: object, judgment: object, score: object, quotes: object) -> Answer:
        """An answer as a form or a file gives it: quotes one a line (or a list), the score a choice or a number."""
        lines = "\n".join(map(str, quotes)) if isinstance(quotes, list) else str(quotes or "")
        return cls(str(verdict or ""), str(judgment or "").strip(), _score_value(score),
                   [line.strip() for line in lines.splitlines() if line.strip()])


def form_fields(page: list[JudgeItem], drafts: dict[str, Judgment], filled: dict[str, Any] | None,
                annotator: str | None) -> dict[str, Any]:
    """The form's fields (pydantic field definitions: name → (type, FieldInfo)) for a page of responses, numbered
    from 1, each given what the person last submitted (`filled`), else the draft, else nothing. Each verdict
    field shows its instruction and response, as text (`_plain`: their markdown and HTML are never rendered);
    the Prefect UI lays out only the start of a long form description, so they stand beside their fields."""
    fields: dict[str, Any] = {
        "annotator": (str, Field(annotator or ..., pattern=ANNOTATOR, title="your name",
                                 description="your judgments are stored as human:NAME")),
    }
    for number, item in enumerate(page, 1):
        draft = drafts.get(item.response_id)
        start = _from_draft(draft) if draft is not None else {}
        start |= {key[: -len(f"_{number}")]: value for key, value in (filled or {}).items()
                  if key.endswith(f"_{number}")}
        fields |= {
            f"verdict_{number}": (Literal["positive", "negative"],
                                  Field(start.get("verdict", ...), title=f"{number}. verdict",
                                        description=item_text(item))),
            f"judgment_{number}": (str, Field(start.get("judgment", ""), max_length=MAX_JUDGMENT_CHARS,
                                              title=f"{number}. judgment",
                                              description="what is wrong (required when negative)" + (
                                                  "" if draft is None else
                                                  f"; drafted by {_plain(draft.judge_id)}: {draft.verdict}"))),
            f"score_{number}": (Literal[SCORES], Field(_score_text(start.get("score")), title=f"{number}. score",
                                                       description="optional, 1 (useless) to 10 (perfect)")),
            f"quotes_{number}": (str, Field(start.get("quotes", ""), max_length=MAX_SPANS * (MAX_QUOTE_CHARS + 1),
                                            title=f"{number}. wrong parts",
                                            description="optional: the wrong parts, copied from the response, "
                                            "one per line")),
        }
    return fields


def _score_text(score: object) -> str:
    """A score as the form's choice: "" for none; a refused answer's float as its whole number."""
    return "" if score is None or score == "" else str(int(float(score)))


def _score_value(value: object) -> object:
    """A submitted score as a number: the form's choice ("" for none, "7"), or a file's 7 or 7.0."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def draft_quotes(draft: Judgment) -> str:
    """The wrong-parts field as the draft fills it: its quotes, one a line."""
    return "\n".join(" ".join(span.quote.split()) for span in draft.spans)


def _from_draft(draft: Judgment) -> dict[str, Any]:
    """The form's fields as the draft fills them: its score only where it is on the form's 1–10 scale (a rule
    critic's is the share of parts right)."""
    on_scale = (draft.score is not None and not draft.judge_id.startswith("rule:") and float(draft.score).is_integer()
                and 1 <= draft.score <= 10)
    score = int(draft.score) if on_scale else None
    return {"verdict": draft.verdict, "judgment": draft.judgment or "", "score": score,
            "quotes": draft_quotes(draft)}


def item_text(item: JudgeItem) -> str:
    """A response and its instruction as the form shows them beside the response's verdict."""
    instruction = item.instruction + (f" {item.input}" if item.input else "")
    return f"**Instruction:** {_plain(instruction)} **Response:** {_plain(item.response) or '(empty)'}"


def page_description(guidelines: str, title: str, refused: list[str]) -> str:
    """The form's markdown: its title (run, round, page), the guidelines and why the last answer was refused."""
    parts = [f"## {_plain(title)}"]
    if refused:
        parts.append("**Your last answer was not stored:**\n\n" + "\n".join(f"- {_plain(r)}" for r in refused))
    parts.append(guidelines.strip())
    return "\n\n".join(parts) + "\n"


def _plain(text: str) -> str:
    """One line of text with every ASCII punctuation mark escaped: shown as typed, its markdown and HTML never
    rendered."""
    return re.sub(r"[!-/:-@\[-`{-~]", lambda m: "\\" + m.group(), " ".join(text.split()))


def answers_of(page: list[JudgeItem], submitted: dict[str, Any]) -> tuple[str, list[Answer]]:
    """The annotator and each response's answer from a submitted form (its fields as `form_fields` names them)."""
    answers = [Answer.given(*(submitted.get(f"{field}_{number}") for field in ("verdict", "judgment", "score", "quotes")))
               for number in range(1, len(page) + 1)]
    return str(submitted.get("annotator") or "").strip(), answers


def page_judgments(page: list[JudgeItem], annotator: str, answers: list[Answer],
                   drafts: dict[str, Judgment] | None = None) -> list[Judgment]:
    """The judgments a person gave a page, one per response, or `PageRefused` naming every answer to change:
    nothing of a refused page is stored. Where a person kept a draft's wrong parts as the form gave them, the
    draft's spans are kept as the drafter placed them (a repeated quote stays where it was blamed)."""
    reasons = []
    if not re.fullmatch(ANNOTATOR, annotator):
        reasons.append(f"your name {annotator!r}: letters, digits, '.', '_' or '-', at most 64")
    judgments = []
    for number, (item, answer) in enumerate(zip(page, answers, strict=True), 1):
        draft = (drafts or {}).get(item.response_id)
        kept = draft is not None and answer.quotes and "\n".join(answer.quotes) == draft_quotes(draft)
        problems = _problems(item, answer, check_quotes=not kept)
        reasons += [f"response {number}: {problem}" for problem in problems]
        if not problems and not reasons:
            spans = draft.spans if kept else tuple(locate(item.response, [SpanQuote(quote=q) for q in answer.quotes]))
            judgments.append(Judgment(status="ok", verdict=answer.verdict, judgment=answer.judgment or None,
                                      score=None if answer.score is None else int(answer.score), spans=spans,
                                      judge_id=person(annotator)))
    if reasons:
        raise PageRefused(reasons)
    return judgments


def _problems(item: JudgeItem, answer: Answer, check_quotes: bool = True) -> list[str]:
    problems = []
    if answer.verdict not in ("positive", "negative"):
        problems.append(f"the verdict must be positive or negative, not {answer.verdict!r}")
    if answer.verdict == "negative" and not answer.judgment:
        problems.append("a negative verdict needs the judgment: what is wrong")
    if len(answer.judgment) > MAX_JUDGMENT_CHARS:
        problems.append(f"the judgment has {len(answer.judgment)} characters, more than {MAX_JUDGMENT_CHARS}")
    if answer.score is not None and not (_whole(answer.score) and 1 <= answer.score <= 10):
        problems.append(f"the score must be a whole number from 1 to 10, not {answer.score!r}")
    if answer.verdict == "positive" and answer.quotes:
        problems.append("a positive verdict blames nothing: leave its wrong parts empty")
    if len(answer.quotes) > MAX_SPANS:
        problems.append(f"{len(answer.quotes)} wrong parts, more than {MAX_SPANS}")
    for quote in answer.quotes if check_quotes else ():
        if len(quote) > MAX_QUOTE_CHARS:
            problems.append(f"a wrong part of {len(quote)} characters, more than {MAX_QUOTE_CHARS}")
        elif not locate(item.response, [SpanQuote(quote=quote)])[0].located:
            problems.append(f"the wrong part {quote!r} is not in the response")
    return problems


def _whole(score: object) -> bool:
    """A whole number, as a spreadsheet writes it too (3.0), not a boolean."""
    return isinstance(score, (int, float)) and not isinstance(score, bool) and float(score).is_integer()


def changed(draft: Judgment, final: Judgment) -> bool:
    """Whether a reviewer changed the draft: its verdict, words, score or blamed parts (where they lie)."""
    def parts(judgment: Judgment) -> list[tuple]:
        return [(span.quote, span.start, span.end) for span in judgment.spans]

    return ((draft.verdict, (draft.judgment or "").strip(), _from_draft(draft)["score"], parts(draft))
            != (final.verdict, final.judgment or "", final.score, parts(final)))
