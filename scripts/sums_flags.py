"""Where CUT's flags fall in `sums` answers: the share of tokens flagged in the wrong parts, the
right parts and elsewhere (separators, extra text), over the negatives of the runs' rounds (a
CUT round with `negative_ratio: null` trains on every one).

    .venv/bin/python scripts/sums_flags.py .online-cut/experiment-sums.duckdb 'sums-cut%'

Detection that follows the judgment flags the wrong parts and leaves the right ones; the tokens
of a wrong part it does not flag are trained up by the Misalign branch's MLE (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import duckdb
from transformers import AutoTokenizer

from judges.rules import _PART_SEPARATOR, _stated_answer
from online_cut.base_model import shipped_model_dir


def part_kinds(text: str, pairs: list[list[int]], offsets: list[tuple[int, int]]) -> list[str]:
    """For each token (by its character offsets): 'wrong' or 'right' (the part it is in), or 'other'."""
    parts, spans, start = _PART_SEPARATOR.split(text), [], 0
    for part in parts:
        spans.append((start, start + len(part)))
        start += len(part) + 1
    wrong = [_stated_answer(parts[i].strip(), (a, b)) != a + b for i, (a, b) in enumerate(pairs) if i < len(parts)]
    kinds = []
    for token_start, _ in offsets:
        part = next((i for i, (s, e) in enumerate(spans) if s <= token_start < e), None)
        kinds.append("other" if part is None or part >= len(wrong) else "wrong" if wrong[part] else "right")
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", help="the experiment's DuckDB store")
    parser.add_argument("runs", help="a SQL LIKE pattern of run names, e.g. 'sums-cut%%'")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(shipped_model_dir())
    with duckdb.connect(args.db, read_only=True) as db:
        rows = db.execute(
            "SELECT r.text, p.reference, list(f.token_index) FILTER (WHERE f.token_index IS NOT NULL) "
            "FROM (SELECT run, round, response_id FROM triples WHERE run LIKE ? AND verdict = 'negative') trained "
            "JOIN responses r USING (response_id) JOIN prompts p USING (prompt_id) "
            "LEFT JOIN flagged_tokens f ON (f.run, f.round, f.response_id) = (trained.run, trained.round, trained.response_id) "
            "GROUP BY trained.run, trained.round, r.response_id, r.text, p.reference",
            [args.runs],
        ).fetchall()
    tokens, flagged = Counter(), Counter()
    for text, reference, flagged_at in rows:
        pairs = (reference if isinstance(reference, dict) else json.loads(reference))["pairs"]
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for index, kind in enumerate(part_kinds(text, pairs, offsets)):
            tokens[kind] += 1
            flagged[kind] += index in set(flagged_at or ())
    shares = {kind: round(flagged[kind] / tokens[kind], 4) for kind in tokens}
    print(json.dumps({"responses": len(rows), "tokens": dict(tokens), "flagged": dict(flagged), "flagged_share": shares}))


if __name__ == "__main__":
    main()
