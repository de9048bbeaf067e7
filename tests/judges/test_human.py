"""People's forms (judges/human.py): what a page shows, and which answers are stored or refused."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt
from prefect.input import RunInput
from pydantic import ValidationError, create_model

from formats.spans import MAX_SPANS, Span, exact
from judges.human import (
    PageRefused, answers_of, changed, form_fields, judged_by, page_description, page_judgments, person,
)
from judges.judgment import JudgeItem, Judgment

PAGE = [JudgeItem(instruction="What is 47 + 38?", response="47 + 38 = 84", response_id="a"),
        JudgeItem(instruction="Name a fruit.", response="An apple, an apple.", response_id="b")]


def _answers(**fields):
    submitted = {"annotator": "ana", "verdict_1": "negative", "judgment_1": "47 + 38 = 85, not 84.", "score_1": 2,
                 "quotes_1": "84", "verdict_2": "positive", "judgment_2": "", "score_2": None, "quotes_2": ""}
    return answers_of(PAGE, {**submitted, **fields})


def test_a_page_answered_in_full_gives_located_judgments_under_the_persons_name() -> None:
    annotator, answers = _answers()
    first, second = page_judgments(PAGE, annotator, answers)
    assert first.judge_id == second.judge_id == "human:ana"
    assert (first.verdict, first.judgment, first.score) == ("negative", "47 + 38 = 85, not 84.", 2)
    assert [(s.start, s.end) for s in first.spans] == [(10, 12)]
    assert (second.verdict, second.judgment, second.spans) == ("positive", None, ())
    assert judged_by("human:ana", "human") and not judged_by("rule:sums", "human") and judged_by("rule:sums", "rule:sums")


@pytest.mark.parametrize(("fields", "reason"), [
    ({"verdict_1": ""}, "response 1: the verdict must be positive or negative, not ''"),
    ({"judgment_1": "  "}, "response 1: a negative verdict needs the judgment: what is wrong"),
    ({"quotes_1": "85"}, "response 1: the wrong part '85' is not in the response"),
    ({"judgment_1": "x" * 100_000}, "response 1: the judgment has 100000 characters, more than 4000"),
    ({"quotes_1": "\n".join(["4"] * (MAX_SPANS + 1))}, f"response 1: {MAX_SPANS + 1} wrong parts, more than {MAX_SPANS}"),
    ({"quotes_2": "apple"}, "response 2: a positive verdict blames nothing"),
    ({"score_2": 11}, "response 2: the score must be a whole number from 1 to 10, not 11"),
    ({"score_2": True}, "response 2: the score must be a whole number from 1 to 10, not True"),
    ({"annotator": "ana smith"}, "your name 'ana smith'"),
])
def test_a_bad_answer_refuses_the_whole_page_naming_the_response_and_the_reason(fields, reason) -> None:
    annotator, answers = _answers(**fields)
    with pytest.raises(PageRefused) as refused:
        page_judgments(PAGE, annotator, answers)
    assert any(r.startswith(reason) for r in refused.value.reasons), refused.value.reasons


def test_the_form_refuses_unknown_fields_and_over_long_text_before_the_flow_reads_it() -> None:
    """The form as flows/people.py builds it, on Prefect's RunInput; the server checks input against its schema."""
    form = create_model("Page", __base__=RunInput, **form_fields(PAGE, {}, None, None))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        form.model_validate({**_answers_raw(), "comment": "x"})
    with pytest.raises(ValidationError, match="at most 4000 characters"):
        form.model_validate({**_answers_raw(), "judgment_1": "x" * 100_000})
    with pytest.raises(ValidationError, match="verdict_2"):
        form.model_validate({k: v for k, v in _answers_raw().items() if k != "verdict_2"})
    schema = form.model_json_schema()
    assert schema["properties"]["judgment_1"]["maxLength"] == 4000 and "verdict_1" in schema["required"]


def _answers_raw() -> dict:
    return {"annotator": "ana", "verdict_1": "negative", "judgment_1": "wrong", "score_1": "", "quotes_1": "",
            "verdict_2": "positive", "judgment_2": "", "score_2": "", "quotes_2": ""}


def test_markdown_links_images_and_html_in_a_response_show_as_text() -> None:
    """Checked on the rendered markdown of everything the form shows: its description and its fields'."""
    hostile = "![pic](http://x/p.png) [link](http://x) <img src=x onerror=alert(1)> <b>bold</b> ```` fence &amp;"
    page = [JudgeItem(instruction="<script>alert(1)</script> Say hi.", response=hostile, response_id="h")]
    draft = Judgment(status="ok", verdict="negative", judgment="[see](http://x) <i>no</i>", judge_id="rule:<i>x</i>")
    shown = [page_description("Be fair.", "Run r, round 1: page 1 of 1", ["response 1: <b>x</b>"])]
    shown += [field.description for _, field in form_fields(page, {"h": draft}, None, None).values() if field.description]
    html = MarkdownIt().render("\n\n".join(shown))
    for tag in ("<img", "<a ", "<script", "<b>", "<i>", "<code"):
        assert tag not in html, tag
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "![pic](http://x/p.png)" in html and "&amp;amp;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_review_fills_the_form_with_the_draft_and_knows_what_the_person_changed() -> None:
    draft = Judgment(status="ok", verdict="negative", judgment="84 is wrong.", score=3.0,
                     spans=(), judge_id="openai:critic@x")
    fields = form_fields(PAGE[:1], {"a": draft}, None, "ana")
    assert fields["verdict_1"][1].default == "negative" and fields["judgment_1"][1].default == "84 is wrong."
    assert fields["score_1"][1].default == "3" and fields["annotator"][1].default == "ana"
    accepted = page_judgments(PAGE[:1], *answers_of(PAGE[:1], {"annotator": "ana", "verdict_1": "negative",
                                                                 "judgment_1": "84 is wrong.", "score_1": 3}))[0]
    edited = page_judgments(PAGE[:1], *answers_of(PAGE[:1], {"annotator": "ana", "verdict_1": "negative",
                                                               "judgment_1": "47 + 38 = 85.", "score_1": 3}))[0]
    assert not changed(draft, accepted) and changed(draft, edited)
    assert person("ana") == accepted.judge_id


def test_a_score_a_spreadsheet_wrote_as_a_float_is_a_whole_number() -> None:
    _, second = page_judgments(PAGE, *_answers(score_2=7.0))
    assert second.score == 7 and second.verdict == "positive"


def test_a_draft_kept_as_it_is_keeps_where_its_drafter_placed_a_repeated_quote() -> None:
    """The format critic blames each comma; the form shows ',' twice. Accepted, the spans stay on the commas the
    drafter blamed, not both on the first comma; a quote the drafter could not place does not block accepting."""
    response = "Tea is hot, green, calm"
    item = JudgeItem(instruction="Do not use any commas.", response=response, response_id="c")
    blamed = (exact(response, 17, 18), exact(response, 10, 11), Span(quote="not there"))
    draft = Judgment(status="ok", verdict="negative", judgment="It uses 2 commas.", spans=blamed, judge_id="rule:format")
    fields = form_fields([item], {"c": draft}, None, "ana")
    submitted = {name: field.default for name, (_, field) in fields.items()}
    [accepted] = page_judgments([item], *answers_of([item], submitted), {"c": draft})
    assert [(s.start, s.end) for s in accepted.spans] == [(17, 18), (10, 11), (None, None)]
    assert not changed(draft, accepted)
    [moved] = page_judgments([item], *answers_of([item], {**submitted, "quotes_1": ","}), {"c": draft})
    assert [(s.start, s.end) for s in moved.spans] == [(10, 11)] and changed(draft, moved)
