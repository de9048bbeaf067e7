"""What the store holds, one pydantic model per table row (and the `triples` row it serves).

Writers build these records; the store validates nothing twice and derives the natural-key
ids (`Prompt.prompt_id`, `Response.response_id`) from their fields, so the same record
written again adds nothing. Dict-valued fields become JSON columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from formats.spans import Span

from formats import keys

RunName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128, description="also a folder name in exports"),
]
Round = Annotated[int, Field(ge=0)]
Verdict = Literal["positive", "negative", "failed"]
AdapterStatus = Literal["candidate", "live", "rejected", "retired"]
RoundStep = Literal["sample", "judge", "refine", "train", "eval"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prompt(Record):
    instruction: str
    input: str = ""
    reference: Any = Field(None, description="free-form, e.g. the answer a rule judge checks against")
    source: str | None = Field(None, description="where the prompt came from, e.g. a suite or a file name")

    @computed_field
    @property
    def prompt_id(self) -> str:
        return keys.prompt_id(self.instruction, self.input)


class Response(Record):
    run: RunName
    round: Round
    prompt_id: str
    text: str
    sample_index: int = Field(0, ge=0, description="which of n samples of this prompt in this round")
    adapter_id: str | None = Field(None, description="the adapter that sampled it; None: base model or imported")
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    sampling: dict[str, Any] | None = Field(None, description="sampling parameters")
    source_id: int | str | None = Field(None, description="the record's `id` in an imported file")
    source_index: int | None = Field(None, ge=0, description="the record's position in an imported file")

    @computed_field
    @property
    def response_id(self) -> str:
        return keys.response_id(self.run, self.round, self.prompt_id, self.adapter_id, self.sample_index)


class Judgment(Record):
    response_id: str
    judge: str = Field(description="names the judge and its config, e.g. 'openai:gpt-4o@1f2e3d4c'; part of the key")
    verdict: Verdict
    judgment: str | None = Field(None, description="what is wrong (negative), optional text for a positive")
    score: float | None = None
    raw_reply: str | None = None
    usage: dict[str, Any] | None = Field(None, description="token usage as the judge reported it")
    cost_usd: float | None = None
    latency_s: float | None = None
    error: str | None = Field(None, description="why a failed judgment failed")
    spans: list[Span] = Field(default_factory=list, description="the parts blamed, kept in `judgment_spans`")
    draft_judge: str | None = Field(None, description="a person's review: the judge whose draft was reviewed")
    changed: bool | None = Field(None, description="a person's review: whether it changed the draft")

    @model_validator(mode="after")
    def _verdict_has_its_text(self) -> Judgment:
        if self.verdict == "negative" and not (self.judgment or "").strip():
            raise ValueError("a negative judgment needs its text")
        if self.verdict == "failed" and not self.error:
            raise ValueError("a failed judgment needs an error")
        return self


class Refinement(Record):
    """ilf: a negative response rewritten by the round's adapter given its judgment, and the judge's verdict on it."""

    run: RunName
    round: Round
    response_id: str = Field(description="the negative response refined")
    judge: str = Field(description="whose judgment asked for the refinement; the same judge judged it")
    adapter_id: str | None = Field(None, description="the adapter that refined; None: base model")
    text: str = Field(description="the refinement y*")
    finish_reason: str | None = None
    sampling: dict[str, Any] | None = Field(None, description="sampling parameters")
    verdict: Verdict
    judgment: str | None = Field(None, description="the judge's words on the refinement")
    score: float | None = None
    error: str | None = Field(None, description="why judging the refinement failed")

    @computed_field
    @property
    def accepted(self) -> bool:
        """Judged positive: (x, y*) is trained on."""
        return self.verdict == "positive"


class Adapter(Record):
    adapter_id: str
    run: RunName
    round: Round = Field(description="the round whose triples trained it")
    path: str
    status: AdapterStatus = "candidate"
    parent_id: str | None = Field(None, description="the adapter it was trained from; None: base model")
    status_reason: str | None = None
    scores: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = Field(
        None, description="cut.fingerprint's probe token ids and float32 log-probs; None: written without one"
    )


class AdapterCheck(Record):
    """What an attach measured: the adapter changed the model, and how far the sampler's scores of the
    fingerprint's probe tokens were from the trainer's and its parent's, against the engine's noise
    (a match or indistinguishable, or the round failed)."""

    run: RunName
    round: Round
    step: str = Field(description="the round's step that attached the adapter, e.g. 'sample'")
    adapter_id: str
    backend: str
    precision: str = Field(description="whose noise the tolerance allows: float32 or half")
    differing_outputs: int | None = Field(None, description="greedy probe outputs unlike the base model's")
    max_logprob_diff: float | None = Field(None, description="from the base model's probe")
    fingerprint_max_abs: float | None = None
    fingerprint_mean_abs: float | None = None
    fingerprint_tokens: int | None = None
    tolerance_max_abs: float | None = None
    tolerance_mean_abs: float | None = None
    verdict: Literal["match", "indistinguishable"] | None = None
    parent_mean_abs: float | None = Field(None, description="mean |Δ log p| from the parent's log-probs")
    position: float | None = Field(None, description="on the line from the parent's log-probs (0) to the adapter's (1)")
    parent_on_engine: bool | None = Field(None, description="position measured from the engine's own parent scores")
    separation: float | None = Field(None, description="adapter and parent apart, in units of the engine's noise")
    noise_mean_abs: float | None = Field(None, description="the engine's own, against the float32 base model")
    noise_rms: float | None = None
    noise_measured: bool | None = Field(None, description="false: the precision's typical noise, assumed")


class TrainingStep(Record):
    run: RunName
    round: Round
    step: int = Field(ge=0)
    loss: float | None = None
    l1: float | None = None
    l2: float | None = None
    flagged_frac: float | None = None
    tokens_per_s: float | None = None
    lr: float | None = None
    seconds: float | None = Field(None, ge=0, description="wall time of the step: its micro-batches and the update")
    reward_margin: float | None = Field(None, description="dpo: mean β·(chosen − rejected) log-ratio to the reference")
    reward_accuracy: float | None = Field(None, description="dpo: share of pairs with a positive reward margin")
    pairs: int | None = Field(None, ge=0, description="dpo: pairs in the step")


class FlaggedToken(Record):
    run: RunName
    round: Round = Field(description="the training round that flagged it")
    response_id: str
    token_index: int = Field(ge=0, description="position in the response's token ids")
    token: str
    p_aligned: float | None = Field(None, description="p(y_t | x, j-)")
    p_misaligned: float | None = Field(None, description="p(y_t | x) or p(y_t | x, j+)")


class Detection(Record):
    """A training round's contrast flags against the tokens the judges' spans cover (micro-averaged)."""

    run: RunName
    round: Round
    rows: int = Field(ge=0, description="negative rows whose judgment located a span")
    span_tokens: int = Field(ge=0)
    contrast_flagged: int = Field(ge=0)
    flagged_in_spans: int = Field(ge=0, description="span tokens the contrast flagged")
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None


class Evaluation(Record):
    run: RunName
    round: Round
    role: Literal["candidate", "incumbent"]
    suite: str
    score: float
    n: int = Field(ge=0)
    adapter_id: str | None = Field(None, description="None: base model")
    judge: str | None = None
    details: dict[str, Any] | None = None


class JudgeBatch(Record):
    """A Batch API submission of a judge: which requests it holds and how far it got."""

    batch_id: str
    judge: str
    attempt: int = Field(ge=1, description="1: the first try of its requests; 2: the one retry")
    request_ids: list[str] = Field(description="the requests' custom_ids: the responses' ids")
    input_file_id: str
    request_file: str | None = Field(None, description="the request file kept on disk (prompts only)")
    status: str = Field(description="the Batch API's: validating, in_progress, ..., completed, failed, expired, cancelled")
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int | None = None
    failed: int | None = None


class RoundState(Record):
    """A row of `rounds`: which steps of a round are done (their seconds are set) and the gate's decision."""

    run: str
    round: int
    status: Literal["running", "done", "imported"]
    adapter_in: str | None
    adapter_out: str | None
    gate_decision: Literal["promoted", "rejected"] | None
    gate_reason: str | None
    sample_s: float | None
    judge_s: float | None
    refine_s: float | None = None  # ilf only
    train_s: float | None
    eval_s: float | None
    wall_s: float | None
    created_at: datetime


class Triple(Record):
    """A row of the `triples` view: an instruction, a response and its judgment."""

    run: str
    round: int
    adapter: str | None
    instruction: str
    input: str
    response: str
    judgment: str | None
    verdict: Literal["positive", "negative"]
    judge: str
    created_at: datetime
    response_id: str
    score: float | None = Field(None, description="the judge's score (1-10 for model judges); None: it gave none")
    truncated: bool = Field(False, description="the sampler cut the response off at max_tokens")
    spans: list[Span] | None = Field(None, description="the parts the judgment blames; None: it names none")
