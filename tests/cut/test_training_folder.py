"""What a launched or placed training step reads back is what the in-process trainer would get."""

from __future__ import annotations

from pathlib import Path

from cut import training_folder
from cut.data import Triple, load_triples
from cut.scoring import FlaggedToken
from cut.trainer import TrainResult
from online_cut.config import Config, dump_config, load_config


def test_the_training_folder_keeps_each_triples_score_so_dpo_pairs_as_in_process(tmp_path: Path) -> None:
    triples = [Triple("What is 2 + 3?", "", "5", None, 9.0), Triple("What is 2 + 3?", "", "6", "Wrong.", 2.0),
               Triple("What is 1 + 1?", "", "2", None)]
    training_folder.write_inputs(tmp_path, dump_config(Config()), triples)
    assert load_triples(tmp_path / training_folder.TRIPLES_FILE) == triples
    assert load_config(tmp_path / training_folder.CONFIG_FILE) == Config()


def test_a_written_training_result_reads_back_as_the_same_result(tmp_path: Path) -> None:
    flagged = {1: [FlaggedToken(index=3, token="6", p_aligned=0.1, p_misaligned=0.7)]}
    result = TrainResult(tmp_path, [{"step": 1, "loss": 0.5}], flagged, [], rows=3, dropped=1, pairs=[(0, 1)])
    training_folder.write_result(tmp_path, result, source={"sql": "SELECT 1"})
    assert training_folder.read_result(tmp_path) == result
