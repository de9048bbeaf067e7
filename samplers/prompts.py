"""Where instructions come from: a file, stored instructions, or a built-in generated suite.

The generated suites are checkable by a rule critic: each prompt's `metadata` holds the
reference (addition, sums: several sums in one answer) or the constraint (format). Every suite item belongs to the training
or the held-out split by a hash of its text, so the splits are disjoint whatever the seeds
and counts, and each split is drawn in a fixed order from its seed.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Literal

from samplers.config import PromptsConfig
from samplers.records import Prompt
from formats.triple_file import CutFormatError, read_records

Split = Literal["train", "heldout"]
SUITES = ("addition", "format", "sums")
# The same skills asked in a wording, and (sums) with part counts, that no training or dev prompt of the
# suites above uses: held out whole, to tell a learned skill from a learned format.
TRANSFER_SUITES = ("addition-transfer", "sums-transfer")
# One item in five is held out for evaluation.
HELDOUT_SHARE = 5


class PromptSourceError(ValueError):
    """Instructions that cannot be read; the message names the file and record at fault."""


def read_prompt_file(path: Path) -> list[Prompt]:
    """Instructions from JSON (a list of records), JSONL or Parquet in the CUT paper's fields.

    Each record needs a non-empty string `instruction`; `input` is optional. Other fields
    (`id`, `output`, `judgment`, ...) are kept in `metadata`.
    """
    path = Path(path)
    try:
        records = read_records(path)
    except CutFormatError as exc:
        raise PromptSourceError(str(exc)) from None
    if not records:
        raise PromptSourceError(f"{path}: no records")
    return [_prompt_from_record(record, f"{path}: {place}") for place, record in records]


def round_prompts(config: PromptsConfig, round_index: int) -> list[Prompt]:
    """The `per_round` instructions of round `round_index`: fresh training-split draws from a suite,
    or the file's records taken in order, wrapping around at the end."""
    if config.suite is not None:
        return suite_prompts(config.suite, "train", config.per_round, seed=f"{config.seed}/{round_index}")
    prompts = read_prompt_file(config.file)
    start = round_index * config.per_round
    return [prompts[(start + offset) % len(prompts)] for offset in range(min(config.per_round, len(prompts)))]


def suite_prompts(suite: str, split: Split, count: int, seed: int | str = 0) -> list[Prompt]:
    """`count` distinct prompts of a built-in suite's split, the same for the same arguments."""
    if suite in TRANSFER_SUITES:
        if split != "heldout":
            raise PromptSourceError(f"suite {suite!r} is held out whole; it has no {split} prompts")
        pool = _SUITE_ITEMS[suite]()
    elif suite in SUITES:
        pool = [prompt for prompt in _SUITE_ITEMS[suite]() if _split_of(prompt) == split]
    else:
        raise PromptSourceError(f"unknown suite {suite!r}; built-in suites: {', '.join(SUITES + TRANSFER_SUITES)}")
    if count > len(pool):
        raise PromptSourceError(f"suite {suite!r} has {len(pool)} {split} prompts, asked for {count}")
    return random.Random(f"{suite}/{split}/{seed}").sample(pool, count)


def _prompt_from_record(record: Any, where: str) -> Prompt:
    if not isinstance(record, dict):
        raise PromptSourceError(f"{where}: expected an object with 'instruction', got {type(record).__name__}")
    instruction = record.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise PromptSourceError(f"{where}: missing or empty 'instruction'")
    input_text = record.get("input") or ""
    if not isinstance(input_text, str):
        raise PromptSourceError(f"{where}: 'input' must be a string, got {type(input_text).__name__}")
    metadata = {key: value for key, value in record.items() if key not in ("instruction", "input")}
    return Prompt(instruction, input_text, metadata)


def _split_of(prompt: Prompt) -> Split:
    digest = hashlib.sha256(prompt.user_message().encode()).digest()
    return "heldout" if digest[0] % HELDOUT_SHARE == 0 else "train"


def _addition_items() -> list[Prompt]:
    return [
        Prompt(
            f"What is {a} + {b}? Reply with just the number.",
            metadata={"suite": "addition", "a": a, "b": b, "answer": a + b},
        )
        for a in range(10, 100)
        for b in range(10, 100)
    ]


FORMAT_TOPICS = (
    "the moon", "volcanoes", "honey bees", "the water cycle", "chess", "photosynthesis",
    "the Roman Empire", "rainbows", "coffee", "the internet", "penguins", "earthquakes",
    "bicycles", "the human heart", "tea", "glaciers", "electric cars", "the piano",
    "sleep", "bread", "the ocean tides", "recycling", "owls", "the printing press",
    "deserts", "lightning", "maps", "the violin", "rice", "comets", "libraries", "wolves",
    "solar panels", "snow", "pyramids", "cheese", "trains", "coral reefs", "clocks", "mushrooms",
)
FORMAT_TASKS = (
    "Describe {topic}.",
    "Explain {topic} to a child.",
    "Give one interesting fact about {topic}.",
    "Write a sentence about {topic}.",
    "Why does {topic} matter?",
)
# (constraint in words for the instruction, constraint for the checker)
# The checker's keys are the ones judges/rules.py's FormatCritic reads.
FORMAT_CONSTRAINTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Answer in at most 5 words.", {"max_words": 5}),
    ("Answer in at most 10 words.", {"max_words": 10}),
    ("Answer in at most 20 words.", {"max_words": 20}),
    ("Answer in lower case only.", {"case": "lower"}),
    ("Answer in upper case only.", {"case": "upper"}),
    ("Do not use any commas in your answer.", {"no_commas": True}),
)


def _format_items() -> list[Prompt]:
    return [
        Prompt(f"{task.format(topic=topic)} {wording}", metadata={"suite": "format", **check})
        for topic in FORMAT_TOPICS
        for task in FORMAT_TASKS
        for wording, check in FORMAT_CONSTRAINTS
    ]


# Three one-digit pairs: with the shipped model most answers are partly right (greedy on 150 held-out
# prompts: 49.1 % of parts, 14 % of whole answers; sampled at temperature 0.5: 34.9 % and 4.7 %), the
# regime where a judgment that names the wrong part has something to point at; two-digit parts were
# right under 12 %.
SUMS_PARTS = 3
SUMS_POOL = 20_000
SUMS_WORDING = "Add each pair and reply with the sums separated by commas: {pairs}."


def _sums_items(suite: str = "sums", wording: str = SUMS_WORDING, part_counts: tuple[int, ...] = (SUMS_PARTS,),
                pool: int = SUMS_POOL) -> list[Prompt]:
    rng = random.Random(f"{suite}-pool")
    seen: dict[tuple[tuple[int, int], ...], Prompt] = {}
    while len(seen) < pool:
        pairs = tuple((rng.randint(1, 9), rng.randint(1, 9)) for _ in range(rng.choice(part_counts)))
        seen.setdefault(pairs, Prompt(
            wording.format(pairs=", ".join(f"{a} + {b}" for a, b in pairs)),
            metadata={"suite": suite, "pairs": [list(pair) for pair in pairs], "answers": [a + b for a, b in pairs]},
        ))
    return list(seen.values())


# Fixed before the span-guided experiment ran (#38), never used to choose a setting.
SUMS_TRANSFER_WORDING = "Work out each of these additions and list the results in the same order, comma-separated: {pairs}"
ADDITION_TRANSFER_WORDING = "Add {a} and {b}. Give only the total."


def _sums_transfer_items() -> list[Prompt]:
    return _sums_items("sums-transfer", SUMS_TRANSFER_WORDING, part_counts=(2, 4), pool=160)


def _addition_transfer_items() -> list[Prompt]:
    return [
        Prompt(ADDITION_TRANSFER_WORDING.format(a=a, b=b), metadata={"suite": "addition-transfer", "a": a, "b": b, "answer": a + b})
        for a in range(10, 100, 3)
        for b in range(11, 100, 4)
    ]


_SUITE_ITEMS = {"addition": _addition_items, "format": _format_items, "sums": _sums_items,
                "addition-transfer": _addition_transfer_items, "sums-transfer": _sums_transfer_items}
# The rule critic that checks each suite's answers.
SUITE_RULES = {"addition": "addition", "format": "format", "sums": "sums",
               "addition-transfer": "addition", "sums-transfer": "sums"}
