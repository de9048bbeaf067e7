"""The judge prompt, the JSON reply it asks for, and the parser every model judge shares.

Templates use `$name` placeholders (string.Template), so the JSON braces in a prompt need no
escaping: `$instruction`, `$input` (may be empty), `$input_section` (a titled block, empty
when there is no input) and `$response`.
"""

from __future__ import annotations

import json
import re
from string import Template
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from formats.spans import MAX_QUOTE_CHARS, MAX_SPANS, SpanQuote, locate
from judges.judgment import JudgeItem

DEFAULT_SYSTEM_PROMPT = "You are a careful, fair judge of how well a response answers an instruction."

DEFAULT_USER_TEMPLATE = """\
Judge the response to the instruction below.

### Instruction:
$instruction
$input_section
### Response:
$response

First analyse the strengths and weaknesses of the response as an answer to this instruction: \
is it correct, does it follow every constraint of the instruction, is it helpful and complete? \
Then decide: "positive" if the response is acceptable as it is, "negative" if it is not. \
A negative judgment says what is wrong, and in "spans" copies each wrong part of the response \
word for word ("quote"), with a few words around it ("context") where the same words occur \
more than once, and how bad it is ("severity": "minor", "major" or "critical"). \
Score the response from 1 (useless) to 10 (perfect).
Reply with only this JSON object: \
{"judgment": "<your analysis in at most three sentences>", "verdict": "positive" or "negative", \
"score": <an integer from 1 to 10>, "spans": [{"quote": "<wrong part>", "context": "<words around it, or empty>", \
"severity": "major"}]}"""

REPAIR_INSTRUCTION = (
    "Your reply could not be used: {reason}. Reply again with only the JSON object "
    '{{"judgment": "<at most three sentences>", "verdict": "positive" or "negative", '
    '"score": <an integer from 1 to 10>, "spans": [<quotes of the wrong parts, or none>]}} and nothing else.'
)
SCORES = list(range(1, 11))

PLACEHOLDERS = ("instruction", "input", "input_section", "response")


class JudgeReply(BaseModel):
    """The JSON object the judge must reply with."""

    model_config = ConfigDict(extra="ignore")

    judgment: str = Field(min_length=1)
    verdict: Literal["positive", "negative"]
    score: int | None = Field(None, ge=SCORES[0], le=SCORES[-1], description="None: a custom prompt that asks for none")
    spans: list[SpanQuote] = Field(default_factory=list, max_length=MAX_SPANS,
                                   description="quotes of the wrong parts; none from a prompt that asks for none")

    def judgment_fields(self, response: str) -> dict[str, Any]:
        """What a `Judgment` takes from this reply, its quotes located in `response`."""
        return {"verdict": self.verdict, "judgment": self.judgment, "score": self.score,
                "spans": tuple(locate(response, self.spans))}


def reply_json_schema(judgment_max_chars: int | None) -> dict[str, Any]:
    """The `response_format` for servers with structured output (OpenAI, vLLM).

    Strict mode requires every property, so the score is required here, as an enum (integer
    bounds are not supported by every structured-output backend). A `maxLength` on the
    judgment stops a small critic from looping inside the string until it runs out of tokens.
    """
    judgment: dict[str, Any] = {"type": "string"}
    if judgment_max_chars is not None:
        judgment["maxLength"] = judgment_max_chars
    quote = {
        "type": "object",
        "properties": {
            "quote": {"type": "string", "maxLength": MAX_QUOTE_CHARS},
            "context": {"type": "string", "maxLength": MAX_QUOTE_CHARS},
            "severity": {"type": "string", "enum": ["minor", "major", "critical"]},
        },
        "required": ["quote", "context", "severity"],
        "additionalProperties": False,
    }
    schema = {
        "type": "object",
        "properties": {
            "judgment": judgment,
            "verdict": {"type": "string", "enum": ["positive", "negative"]},
            "score": {"type": "integer", "enum": SCORES},
            "spans": {"type": "array", "items": quote, "maxItems": MAX_SPANS},
        },
        "required": ["judgment", "verdict", "score", "spans"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "judgment", "strict": True, "schema": schema}}


def check_template(template: str) -> str:
    """Raise ValueError if the template names an unknown placeholder or omits the response."""
    names = set(Template(template).get_identifiers())
    unknown = names - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use ${', $'.join(PLACEHOLDERS)}")
    if "response" not in names or "instruction" not in names:
        raise ValueError("the template must contain $instruction and $response")
    return template


def judge_messages(item: JudgeItem, system_prompt: str, user_template: str) -> list[dict[str, str]]:
    input_section = f"\n### Input:\n{item.input}\n" if item.input else ""
    user = Template(user_template).substitute(
        instruction=item.instruction, input=item.input, input_section=input_section, response=item.response
    )
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def repair_messages(messages: list[dict[str, str]], bad_reply: str, reason: str) -> list[dict[str, str]]:
    """The original conversation, the unusable reply (shortened) and an instruction to fix it."""
    return [
        *messages,
        {"role": "assistant", "content": bad_reply[:400]},
        {"role": "user", "content": REPAIR_INSTRUCTION.format(reason=reason)},
    ]


class MalformedReply(ValueError):
    """A reply that is not the asked JSON object; the message says why."""


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_reply(text: str | None, finish_reason: str | None) -> JudgeReply:
    """The validated reply, or MalformedReply saying what is wrong with it."""
    if finish_reason == "length":
        raise MalformedReply("the reply was cut off at max_tokens (finish_reason 'length')")
    if not text or not text.strip():
        raise MalformedReply("the reply is empty")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise MalformedReply("the reply is not a JSON object")
    try:
        data = json.loads(body[start : end + 1])
    except json.JSONDecodeError as exc:
        raise MalformedReply(f"the reply is not valid JSON ({exc.msg})") from None
    try:
        return JudgeReply.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors())
        raise MalformedReply(f"the reply has wrong fields ({problems})") from None
