"""Import CUT-paper triples into the store: one round of a run (default round 0), in one transaction.

Each record becomes a prompt, a response (no adapter) and a judgment by the judge
`imported`: a null judgment is positive, a text judgment negative. The whole file is
checked before anything is written and then written in one transaction, so a bad file
leaves the store as it was and importing the same file again adds nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from formats.triple_file import CutRecord, read_cut_records
from storage.records import Judgment, Prompt, Response, RunName
from storage.store import Store, Transaction

IMPORT_JUDGE = "imported"
# Rounds are stored as 32-bit integers.
MAX_ROUND = 2**31 - 1
# How many conflicting records an error lists before it only counts the rest.
CONFLICTS_SHOWN = 5


class ImportConflict(ValueError):
    """Records that map to stored triples of the same run and round but hold other text; nothing is imported."""


@dataclass(frozen=True)
class ImportSummary:
    path: Path
    run: str
    round: int
    read: int
    added: int

    @property
    def skipped(self) -> int:
        """Records already in the store."""
        return self.read - self.added


def default_run_name(path: Path) -> str:
    """The file's stem made safe as a run name: `online-iter1.json` → `online-iter1`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._") or "imported"


def check_run_name(run: str) -> str:
    try:
        return TypeAdapter(RunName).validate_python(run)
    except ValidationError:
        raise ValueError(
            f"run name {run!r} is not allowed: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        ) from None


def import_file(store: Store, path: Path, run: str | None = None, round: int = 0) -> ImportSummary:
    """Import a .json/.jsonl/.parquet file of CUT triples as a round of `run` (default: the file's stem)."""
    records = read_cut_records(path)
    run = check_run_name(run or default_run_name(path))
    if not 0 <= round <= MAX_ROUND:
        raise ValueError(f"round {round} is not allowed: rounds count from 0 to {MAX_ROUND}")
    prompts, responses, judgments = _triples(records, run, round, source=f"import:{path.name}")
    with store.transaction() as tx:
        _refuse_conflicts(tx, path, run, round, responses, judgments)
        tx.add_run(run, source=f"import:{path.name}")
        tx.start_round(run, round, status="imported")
        tx.add_prompts(prompts)
        tx.add_responses(responses)
        added = tx.add_judgments(judgments)
    return ImportSummary(path=path, run=run, round=round, read=len(records), added=added)


def _refuse_conflicts(
    tx: Transaction, path: Path, run: str, round: int, responses: list[Response], judgments: list[Judgment]
) -> None:
    """Importing again adds nothing only when the stored triple is the same; other text under the same
    key (a different file of the same name, an edited file) would be dropped silently, so it is refused."""
    stored = tx.stored_texts([r.response_id for r in responses], IMPORT_JUDGE)
    conflicts = []
    for index, (response, judgment) in enumerate(zip(responses, judgments), start=1):
        if response.response_id not in stored:
            continue
        text, verdict, judgment_text = stored[response.response_id]
        if text != response.text:
            conflicts.append(f"record {index}: its output differs from the stored response {response.response_id}")
        elif verdict is not None and (verdict, judgment_text) != (judgment.verdict, judgment.judgment):
            conflicts.append(f"record {index}: its judgment differs from the stored one of response {response.response_id}")
    if conflicts:
        more = f"\n  ... and {len(conflicts) - CONFLICTS_SHOWN} more" if len(conflicts) > CONFLICTS_SHOWN else ""
        raise ImportConflict(
            f"{path}: {len(conflicts)} records would replace different triples already stored in run {run!r} "
            f"round {round}:\n  " + "\n  ".join(conflicts[:CONFLICTS_SHOWN]) + more
            + "\nimport it under another run (--run NAME) or round (--round N)"
        )


def _triples(records: list[CutRecord], run: str, round: int, source: str) -> tuple[list[Prompt], list[Response], list[Judgment]]:
    prompts, responses, judgments = [], [], []
    # A prompt repeated in the file is its 2nd, 3rd ... sample: the same file maps to the same keys.
    samples_of_prompt: Counter[str] = Counter()
    for index, record in enumerate(records):
        prompt = Prompt(instruction=record.instruction, input=record.input, source=source)
        response = Response(
            run=run,
            round=round,
            prompt_id=prompt.prompt_id,
            sample_index=samples_of_prompt[prompt.prompt_id],
            text=record.output,
            source_id=record.id,
            source_index=index,
        )
        samples_of_prompt[prompt.prompt_id] += 1
        verdict = "positive" if record.judgment is None else "negative"
        prompts.append(prompt)
        responses.append(response)
        judgments.append(
            Judgment(response_id=response.response_id, judge=IMPORT_JUDGE, verdict=verdict, judgment=record.judgment,
                     spans=record.spans)
        )
    return prompts, responses, judgments
