"""Triples → token rows: the contexts each objective trains on, with the response ids shared.

Prompt and response are tokenized separately and concatenated, so a response has the very
same ids under every context. Contexts per objective (templates in `CutConfig.templates`):

- cut: Align-P triples → x; Align-N triples → [x, j−] and the Misalign context (the bare
  instruction x, or [x, j+] with `misalign_context: fake_positive`)
- sft: positives only → x
- hindsight: every triple → [x, j] (j+ for positives)
- dpo: every triple → x (the trainer pairs the rows; `cut.pairs`)
- forward: every triple → two rows, x predicting the response, and [x, y] (the `forward`
  template) predicting the judgment (j+ for positives: the judge's words, else the configured text)
- ilf: positives only → x, as sft; the round (`rounds.refine.refine`) adds each accepted
  refinement y* of a negative as a positive triple (x, y*)

A row's target — the ids after its context, the ones that carry the loss — is the response,
or on forward's second row the judgment, tokenized apart and appended the same way.

Length policy: a sequence longer than `max_length` loses prompt tokens from the left; the
target is never cut, and a triple with a target that alone does not fit is dropped and counted.

A target ends with the end-of-sequence token, unless it is a response the sampler cut off at
`max_tokens` (`Triple.truncated`): that one did not end there. An Align-N row of `cut` carries
the response tokens its judgment's spans cover (`blamed`, for `cut.detection`), each with the
weight of its severity (`cut.severity_weights`): the response is tokenized on its own with the
tokenizer's offset mapping, and a token overlapping a span's characters is in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from cut.batches import TokenRow
from cut.config import CutConfig, SeverityWeights, TemplatesConfig
from cut.data import Triple
from formats.spans import Span


@dataclass(frozen=True)
class RowSet:
    rows: list[TokenRow]
    dropped: int  # triples whose response does not fit in `max_length`


_PLACEHOLDER = re.compile(r"\{(instruction|judgment|response)\}")


def fill(template: str, instruction: str, judgment: str = "", response: str = "") -> str:
    """A template with its placeholders replaced in one pass: braces elsewhere (JSON, code) and
    placeholder-like text inside the values stay as they are."""
    values = {"instruction": instruction, "judgment": judgment, "response": response}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class _Context:
    """The user message(s) one row is built on, and which text it predicts."""

    aligned: str
    misaligned: str | None = None
    target: Literal["response", "judgment"] = "response"


def _contexts(triple: Triple, config: CutConfig) -> list[_Context]:
    """The rows' contexts of one triple under `config.objective` (none: the objective skips it)."""
    t: TemplatesConfig = config.templates
    plain = fill(t.instruction, triple.prompt)
    if config.objective in ("sft", "ilf"):
        return [] if triple.negative else [_Context(plain)]
    if config.objective == "dpo":
        return [_Context(plain)]
    if config.objective == "hindsight":
        return [_Context(fill(t.judged, triple.prompt, triple.judgment or t.positive_judgment))]
    if config.objective == "forward":
        return [_Context(plain), _Context(fill(t.forward, triple.prompt, response=triple.response), target="judgment")]
    if not triple.negative:
        return [_Context(plain)]
    fake_positive = config.misalign_context == "fake_positive"
    misaligned = fill(t.judged, triple.prompt, t.positive_judgment) if fake_positive else plain
    return [_Context(fill(t.judged, triple.prompt, triple.judgment), misaligned)]


def _judgment_text(triple: Triple, templates: TemplatesConfig) -> str:
    """What forward's judgment row predicts: j−, or the judge's words on a positive, or the configured j+."""
    return triple.judgment or triple.positive_judgment or templates.positive_judgment


def refine_request(triple: Triple, templates: TemplatesConfig) -> str:
    """ilf's user message asking the model to improve a negative's response given its judgment."""
    return fill(templates.refine, triple.prompt, triple.judgment or "", triple.response)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, user_message: str) -> list[int]:
    """The chat-templated prompt, ending where the assistant's reply starts."""
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}], add_generation_prompt=True, tokenize=True
    )
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def build_rows(
    triples: list[Triple], tokenizer: PreTrainedTokenizerBase, config: CutConfig, indices: list[int] | None = None
) -> RowSet:
    """Rows of `triples[i]` for i in `indices` (default: every triple)."""

    def target_ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    rows, dropped = [], 0
    for index in range(len(triples)) if indices is None else indices:
        triple = triples[index]
        contexts = _contexts(triple, config)
        if triple.truncated and config.truncated == "drop":
            continue
        response = tokenizer(triple.response, add_special_tokens=False, return_offsets_mapping=True)
        end = [] if triple.truncated else [tokenizer.eos_token_id]
        targets = {"response": response["input_ids"] + end}
        if any(c.target == "judgment" for c in contexts):
            targets["judgment"] = target_ids(_judgment_text(triple, config.templates))
        if any(config.max_length - len(targets[c.target]) < 1 for c in contexts):
            dropped += 1
            continue
        for context in contexts:
            target = targets[context.target]
            room = config.max_length - len(target)
            aligned, misaligned = (
                None if c is None else prompt_ids(tokenizer, c)[-room:] + target
                for c in (context.aligned, context.misaligned)
            )
            blamed = (blamed_tokens(response["offset_mapping"], triple.spans, config.severity_weights)
                      if misaligned is not None else None)
            tokens, weights = (None, None) if blamed is None else (tuple(blamed), tuple(blamed.values()))
            rows.append(TokenRow(index, aligned, misaligned, len(target), context.target, tokens, weights))
    return RowSet(rows, dropped)


def blamed_tokens(offsets: list[tuple[int, int]], spans: tuple[Span, ...],
                  weights: SeverityWeights | None = None) -> dict[int, float] | None:
    """The tokens (character `offsets` each) that overlap a located span, in order, each with its weight on α: the
    largest among the severities of the spans it overlaps (a span without a severity weighs 1). None when no span
    is located, so that the row falls back to contrast detection."""
    weights = weights or SeverityWeights()
    located = [(span.start, span.end, 1.0 if span.severity is None else getattr(weights, span.severity))
               for span in spans if span.located]
    if not located:
        return None
    overlapping = ((t, [w for start, end, w in located if first < end and after > start])
                   for t, (first, after) in enumerate(offsets))
    return {t: max(found) for t, found in overlapping if found}
