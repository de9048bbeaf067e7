"""Triples → token rows: the contexts each objective trains on, with the response ids shared.

Prompt and response are tokenized separately and concatenated, so a response has the very
same ids under every context. Contexts per objective (templates in `CutConfig.templates`):

- cut: Align-P triples → x; Align-N triples → [x, j−] and the Misalign context (the bare
  instruction x, or [x, j+] with `misalign_context: fake_positive`)
- sft: positives only → x
- hindsight: every triple → [x, j] (j+ for positives)
- dpo: every triple → x (the trainer pairs the rows; `cut.pairs`)

Length policy: a sequence longer than `max_length` loses prompt tokens from the left; the
response is never cut, and a triple whose response alone does not fit is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from cut.config import CutConfig, TemplatesConfig
from cut.data import Triple


@dataclass(frozen=True)
class TokenRow:
    triple_index: int  # position in the list of triples given to `build_rows`
    aligned_ids: list[int]  # aligned-context prompt + response
    misaligned_ids: list[int] | None  # Misalign-context prompt + response; Align-N rows of `cut` only
    response_len: int  # the last `response_len` ids of both sequences are the response

    @property
    def negative(self) -> bool:
        """An Align-N row: its response gets the unlikelihood term."""
        return self.misaligned_ids is not None

    @property
    def response_ids(self) -> list[int]:
        return self.aligned_ids[-self.response_len :]

    @property
    def length(self) -> int:
        return max(len(self.aligned_ids), len(self.misaligned_ids or ()))


@dataclass(frozen=True)
class RowSet:
    rows: list[TokenRow]
    dropped: int  # triples whose response does not fit in `max_length`


def _fill(template: str, instruction: str, judgment: str = "") -> str:
    # Plain replacement, not str.format: templates may hold other braces (JSON, code).
    return template.replace("{instruction}", instruction).replace("{judgment}", judgment)


def _contexts(triple: Triple, config: CutConfig) -> tuple[str, str | None] | None:
    """User messages of the aligned and the misaligned context; None: the objective skips the triple."""
    t: TemplatesConfig = config.templates
    plain = _fill(t.instruction, triple.prompt)
    if config.objective == "sft":
        return None if triple.negative else (plain, None)
    if config.objective == "dpo":
        return plain, None
    if config.objective == "hindsight":
        return _fill(t.judged, triple.prompt, triple.judgment or t.positive_judgment), None
    if not triple.negative:
        return plain, None
    misaligned = plain if config.misalign_context == "instruction" else _fill(t.judged, triple.prompt, t.positive_judgment)
    return _fill(t.judged, triple.prompt, triple.judgment), misaligned


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
    rows, dropped = [], 0
    for index in range(len(triples)) if indices is None else indices:
        triple = triples[index]
        contexts = _contexts(triple, config)
        if contexts is None:
            continue
        response = tokenizer(triple.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        room = config.max_length - len(response)
        if room < 1:
            dropped += 1
            continue
        aligned, misaligned = (None if c is None else prompt_ids(tokenizer, c)[-room:] + response for c in contexts)
        rows.append(TokenRow(index, aligned, misaligned, len(response)))
    return RowSet(rows, dropped)
