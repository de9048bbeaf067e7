"""The judge's reply parser: the asked JSON object, or a reason why not."""

from __future__ import annotations

import pytest

from judges.config import JudgeConfig
from judges.judgment import JudgeItem
from formats.spans import MAX_SPANS
from judges.prompt import DEFAULT_USER_TEMPLATE, MalformedReply, judge_messages, parse_reply, reply_json_schema


def test_parser_reads_the_json_object_even_inside_a_code_fence() -> None:
    reply = parse_reply('```json\n{"judgment": "Wrong sum.", "verdict": "negative", "score": 2}\n```', "stop")
    assert (reply.judgment, reply.verdict, reply.score) == ("Wrong sum.", "negative", 2.0)


@pytest.mark.parametrize(
    ("text", "finish_reason", "reason"),
    [
        ('{"judgment": "The response loops and loops and', "length", "cut off at max_tokens"),
        ("The response looks good to me.", "stop", "not a JSON object"),
        ('{"judgment": "ok", "verdict": "positive",}', "stop", "not valid JSON"),
        ('{"judgment": "ok", "verdict": "fine"}', "stop", "wrong fields (verdict"),
        ('{"verdict": "negative"}', "stop", "wrong fields (judgment"),
        ("", "stop", "empty"),
    ],
)
def test_parser_says_why_a_reply_is_malformed(text: str, finish_reason: str, reason: str) -> None:
    with pytest.raises(MalformedReply, match=reason.replace("(", r"\(")):
        parse_reply(text, finish_reason)


def test_prompt_fills_the_item_in_and_asks_for_the_json_object() -> None:
    item = JudgeItem(instruction="Sum {these}", input="3 and 4", response="7")
    [system, user] = judge_messages(item, "judge", DEFAULT_USER_TEMPLATE)
    assert system == {"role": "system", "content": "judge"}
    assert "Sum {these}" in user["content"] and "### Input:\n3 and 4" in user["content"]
    assert '{"judgment":' in user["content"] and "strengths and weaknesses" in user["content"]


def test_config_refuses_a_template_with_an_unknown_placeholder() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        JudgeConfig(user_template="$instruction $response $answer")


def test_the_judge_is_asked_for_a_score_from_one_to_ten_in_the_same_object() -> None:
    assert '"score": <an integer from 1 to 10>' in DEFAULT_USER_TEMPLATE
    schema = reply_json_schema(judgment_max_chars=300)["json_schema"]["schema"]
    assert schema["required"] == ["judgment", "verdict", "score", "spans"]
    assert schema["properties"]["score"]["enum"] == list(range(1, 11))


def test_the_reply_schema_bounds_the_quotes_of_wrong_parts() -> None:
    spans = reply_json_schema(judgment_max_chars=300)["json_schema"]["schema"]["properties"]["spans"]
    assert spans["maxItems"] == MAX_SPANS and spans["items"]["required"] == ["quote", "context", "severity"]
    assert '"spans": [{"quote":' in DEFAULT_USER_TEMPLATE


@pytest.mark.parametrize("score", [0, 11, 6.5])
def test_a_score_outside_one_to_ten_is_a_malformed_reply(score) -> None:
    with pytest.raises(MalformedReply, match="wrong fields \\(score"):
        parse_reply(f'{{"judgment": "ok", "verdict": "positive", "score": {score}}}', "stop")


def test_a_reply_without_a_score_still_parses_for_prompts_that_ask_for_none() -> None:
    assert parse_reply('{"judgment": "ok", "verdict": "positive"}', "stop").score is None
