"""What a launched or placed training step reads back is what the in-process trainer would get."""

from __future__ import annotations

from pathlib import Path

from cut.data import Triple, load_triples
from online_cut.config import Config
from online_cut.launch import write_training_inputs


def test_the_training_folder_keeps_each_triples_score_so_dpo_pairs_as_in_process(tmp_path: Path) -> None:
    triples = [Triple("What is 2 + 3?", "", "5", None, 9.0), Triple("What is 2 + 3?", "", "6", "Wrong.", 2.0),
               Triple("What is 1 + 1?", "", "2", None)]
    write_training_inputs(tmp_path, Config(), triples)
    [written] = [p for p in tmp_path.iterdir() if p.suffix == ".jsonl"]
    assert load_triples(written) == triples
