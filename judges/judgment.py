"""What a judge is asked about (`JudgeItem`) and what it answers (`Judgment`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from formats.spans import Span


class JudgeItem(BaseModel):
    """One response to judge: the instruction (with its optional input) and the response."""

    model_config = ConfigDict(frozen=True)

    instruction: str
    input: str = ""
    response: str
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="facts a rule critic checks against, e.g. {'a': 47, 'b': 38} or {'max_words': 10}",
    )
    response_id: str | None = Field(
        None, description="the store's response this is (set by the pipeline); None for a dataset judged offline"
    )


class Judgment(BaseModel):
    """A judge's verdict on one response, or the reason there is none (status 'failed')."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "failed"]
    verdict: Literal["positive", "negative"] | None = None
    judgment: str | None = Field(None, description="the judgment in words; None when failed")
    score: float | None = None
    spans: tuple[Span, ...] = Field((), description="the parts of the response it blames, located (formats/spans.py)")
    error: str | None = Field(None, description="why the judgment failed; None when ok")
    raw: str | None = Field(None, description="the judge's last reply as it came")
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(None, description="estimated from the configured prices; None if unpriced")
    latency_s: float = 0.0
    judge_id: str
    cached: bool = Field(False, description="answered from the judgment cache, not by a new request")

    @classmethod
    def failed(cls, judge_id: str, error: str, **details: Any) -> Judgment:
        return cls(status="failed", judge_id=judge_id, error=error, **details)
