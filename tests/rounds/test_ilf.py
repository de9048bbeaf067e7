"""ilf: the refine step (stored, resumable) and what the round trains on. Steps as plain functions:
the tiny model on the transformers back-end, and one round of the shipped model on a real vLLM engine."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

import cut.trainer
import rounds.refine
from rounds import context, evaluate as evaluating, judge as judging, refine as refining, sample as sampling, train as training
from tasks.training import train_in_process
from online_cut.config import parse_config
from samplers.factory import open_sampler
from storage import records
from storage.store import Store
from engines import KV_CACHE_GIB

REFINEMENT_COLUMNS = "response_id, judge, adapter_id, text, finish_reason, verdict, judgment, score, accepted"


def ilf_context(folder: Path, model: Path, sampler: dict, run: str = "ilf") -> context.RunContext:
    config = parse_config(
        {
            "model": {"path": str(model), "max_model_len": 512},
            "prompts": {"suite": "addition", "per_round": 8},
            "sampler": {"n": 1, "temperature": 0.0, "max_tokens": 24, **sampler},
            "cut": {"objective": "ilf", "positive_ratio": None, "micro_batch_size": 4, "max_length": 160},
            "storage": {"db": str(folder / "store.duckdb"), "adapters_dir": str(folder / "adapters")},
            "evaluation": {"n": 4},
        },
        "test",
    )
    ctx = context.RunContext(config, run, Store.from_config(config.storage))
    ctx.store.add_run(run)
    return ctx


def refinements_table(ctx: context.RunContext) -> list[dict]:
    return ctx.store.query(f"SELECT {REFINEMENT_COLUMNS} FROM refinements ORDER BY response_id")


class KilledDuringRefine(Exception):
    pass


def kill_after_first_chunk(monkeypatch) -> list[int]:
    """Make `refine_responses` fail on its second call, as a kill after the first chunk was stored;
    returns the sizes of the chunks it was asked to refine."""
    real = rounds.refine.refine_responses
    asked: list[int] = []

    def refine_responses(sampler, judge, items, *args):
        asked.append(len(items))
        if len(asked) == 2:
            raise KilledDuringRefine
        return real(sampler, judge, items, *args)

    monkeypatch.setattr(rounds.refine, "refine_responses", refine_responses)
    return asked


def spy_on_training(monkeypatch) -> list[list]:
    """The triples each `train` call got; training itself runs as ever."""
    calls: list[list] = []
    real = cut.trainer.train

    def train(config, base_model, triples, *args, **kwargs):
        calls.append(list(triples))
        return real(config, base_model, triples, *args, **kwargs)

    monkeypatch.setattr(cut.trainer, "train", train)
    return calls


def refine_killed_then_resumed(ctx, sampler, judge, monkeypatch) -> list[int]:
    """Refine with chunks of 2 killed after the first chunk, then rerun; returns each attempt's chunk sizes."""
    monkeypatch.setattr(refining, "REFINE_CHUNK", 2)
    first = kill_after_first_chunk(monkeypatch)
    with pytest.raises(KilledDuringRefine):
        refining.refine(ctx, sampler, judge, 1)
    assert len(refinements_table(ctx)) == 2 and ctx.state(1).refine_s is None
    monkeypatch.undo()
    monkeypatch.setattr(refining, "REFINE_CHUNK", 2)
    resumed: list[int] = []
    real = rounds.refine.refine_responses
    monkeypatch.setattr(rounds.refine, "refine_responses",
                        lambda s, j, items, *a: resumed.append(len(items)) or real(s, j, items, *a))
    refining.refine(ctx, sampler, judge, 1)
    return first, resumed


def sampled_and_judged(ctx, sampler, judge) -> int:
    context.start_round(ctx, 1)
    sampling.sample(ctx, sampler, 1)
    judging.judge(ctx, judge, 1)
    return ctx.store.query("SELECT count(*) AS n FROM triples WHERE verdict = 'negative'")[0]["n"]


def test_a_refine_step_killed_after_a_chunk_redoes_only_the_unstored_negatives(tiny_model, tmp_path, monkeypatch):
    ctx = ilf_context(tmp_path / "killed", tiny_model, {"backend": "transformers"})
    judge = evaluating.suite_critic("addition")
    with open_sampler(ctx.config.sampler, ctx.base_model) as sampler:
        negatives = sampled_and_judged(ctx, sampler, judge)
        assert negatives >= 3
        # An uninterrupted run from the same samples and judgments, in a copy of the store.
        (tmp_path / "whole").mkdir()
        shutil.copy(ctx.store.path, tmp_path / "whole" / "store.duckdb")
        whole = ilf_context(tmp_path / "whole", tiny_model, {"backend": "transformers"})
        monkeypatch.setattr(refining, "REFINE_CHUNK", 2)
        assert refining.refine(whole, sampler, judge, 1) == negatives
        monkeypatch.undo()

        first, resumed = refine_killed_then_resumed(ctx, sampler, judge, monkeypatch)
        assert first == [2, 2] and sum(resumed) == negatives - 2  # the stored chunk was not refined again
        assert refining.refine(ctx, sampler, judge, 1) == 0  # done: a third run does nothing

    table = refinements_table(ctx)
    assert table == refinements_table(whole)
    assert len({row["response_id"] for row in table}) == len(table) == negatives
    negative_ids = {t.response_id for t in ctx.store.triples(ctx.run) if t.verdict == "negative"}
    assert {row["response_id"] for row in table} == negative_ids
    view = ctx.store.query("SELECT response, judgment, refinement, refinement_judgment FROM refined_triples")
    assert len(view) == negatives and all(row["judgment"] and row["refinement_judgment"] for row in view)


def add_judged(store: Store, run: str, instruction: str, text: str, verdict: str, judgment: str) -> str:
    prompt = records.Prompt(instruction=instruction)
    response = records.Response(run=run, round=1, prompt_id=prompt.prompt_id, text=text)
    with store.transaction() as tx:
        tx.add_prompts([prompt])
        tx.add_responses([response])
        tx.add_judgments([records.Judgment(response_id=response.response_id, judge="rule:addition",
                                           verdict=verdict, judgment=judgment)])
    return response.response_id


@pytest.mark.parametrize("accepted", [True, False])
def test_ilf_trains_on_the_positives_and_the_accepted_refinements_only(tiny_model, tmp_path, monkeypatch, caplog,
                                                                        accepted):
    ctx = ilf_context(tmp_path, tiny_model, {"backend": "transformers"})
    ctx.store.start_round(ctx.run, 1)
    add_judged(ctx.store, ctx.run, "What is 2 + 3?", "5", "positive", "The response is correct: 2 + 3 = 5.")
    kept = add_judged(ctx.store, ctx.run, "What is 4 + 4?", "9", "negative", "Incorrect: 4 + 4 = 8, not 9.")
    refused = add_judged(ctx.store, ctx.run, "What is 1 + 6?", "8", "negative", "Incorrect: 1 + 6 = 7, not 8.")
    with ctx.store.transaction() as tx:
        tx.add_refinements([
            records.Refinement(run=ctx.run, round=1, response_id=kept, judge="rule:addition", text="8",
                               verdict="positive" if accepted else "negative", judgment="…"),
            records.Refinement(run=ctx.run, round=1, response_id=refused, judge="rule:addition", text="6",
                               verdict="negative", judgment="Incorrect: 1 + 6 = 7, not 6."),
        ])
        tx.record_round_step(ctx.run, 1, "refine", 1.0)
    assert ctx.store.query("SELECT count(*) FILTER (WHERE accepted) AS n FROM refinements")[0]["n"] == int(accepted)

    trained = spy_on_training(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="rounds"):
        candidate = training.train(ctx, 1, "rule:addition", train_in_process)
    assert candidate is not None and (Path(candidate.path) / "adapter_model.safetensors").is_file()
    (triples,) = trained
    expected = [("What is 2 + 3?", "5")] + ([("What is 4 + 4?", "8")] if accepted else [])
    assert [(t.instruction, t.response) for t in triples] == expected
    assert not any(t.negative for t in triples)
    assert ("no refinement accepted" in caplog.text) is not accepted


@pytest.mark.integration
def test_an_ilf_round_on_the_shipped_model_refines_judges_and_trains_on_the_accepted(
        shipped_model, shipped_merged_engine, tmp_path, monkeypatch):
    vllm = {"backend": "vllm-merged", "kv_cache_gib": KV_CACHE_GIB}
    ctx = ilf_context(tmp_path / "killed", shipped_model, vllm)
    judge = evaluating.suite_critic("addition")
    sampler = shipped_merged_engine.sampler  # the config's sampler, in float32
    negatives = sampled_and_judged(ctx, sampler, judge)
    assert negatives >= 3
    (tmp_path / "whole").mkdir()
    shutil.copy(ctx.store.path, tmp_path / "whole" / "store.duckdb")
    whole = ilf_context(tmp_path / "whole", shipped_model, vllm)
    monkeypatch.setattr(refining, "REFINE_CHUNK", 2)
    refining.refine(whole, sampler, judge, 1)
    monkeypatch.undo()
    first, resumed = refine_killed_then_resumed(ctx, sampler, judge, monkeypatch)
    assert sum(resumed) == negatives - 2
    table = refinements_table(ctx)
    assert table == refinements_table(whole) and len(table) == negatives
    accepted = {row["response_id"]: row["text"] for row in table if row["accepted"]}
    assert accepted, f"no refinement accepted: {table}"
    assert all(row["judgment"] for row in table)

    monkeypatch.undo()
    trained = spy_on_training(monkeypatch)
    assert training.train(ctx, 1, judge.judge_id, train_in_process) is not None
    (triples,) = trained
    positives = [(t.instruction, t.response) for t in ctx.store.triples(ctx.run) if t.verdict == "positive"]
    refined = [(t.instruction, accepted[t.response_id]) for t in ctx.store.triples(ctx.run)
               if t.response_id in accepted]
    assert [(t.instruction, t.response) for t in triples] == positives + refined


def test_offline_ilf_refines_the_files_negatives_with_the_configured_sampler_and_judge(tiny_model, tmp_path):
    import json
    import subprocess
    import sys

    import yaml

    triples = tmp_path / "triples.json"
    triples.write_text(json.dumps([
        {"instruction": "What is 2 + 3?", "output": "5", "judgment": None},
        {"instruction": "What is 4 + 4?", "output": "9", "judgment": "Incorrect: 4 + 4 = 8, not 9."},
        {"instruction": "What is 1 + 6?", "output": "8", "judgment": "Incorrect: 1 + 6 = 7, not 8."},
    ]))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_model)},
        "sampler": {"backend": "transformers", "temperature": 0.0, "max_tokens": 6},
        "judge": {"kind": "rule", "rule": "addition"},
        "cut": {"positive_ratio": None},
    }))
    out = tmp_path / "adapter"
    done = subprocess.run([str(Path(sys.executable).with_name("online-cut")), "train", "--objective", "ilf",
                           "--triples", str(triples), "--config", str(config), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    refinements = [json.loads(line) for line in (out / "refinements.jsonl").read_text().splitlines()]
    assert [r["triple"] for r in refinements] == [1, 2]
    assert all(r["verdict"] in ("positive", "negative") and r["judgment"] for r in refinements)
    accepted = sum(r["accepted"] for r in refinements)
    assert json.loads((out / "summary.json").read_text())["rows"] == 1 + accepted


def test_the_trainer_of_an_ilf_round_is_asked_for_sft_rows_and_never_refines_again(tiny_model, tmp_path) -> None:
    """Issue 40: a launched or placed trainer given objective ilf ran the refine step again in the training
    process, opening a second engine. The round has refined already: its trainer gets sft's rows."""
    ctx = ilf_context(tmp_path, tiny_model, {"backend": "transformers"})
    ctx.store.start_round(ctx.run, 1)
    add_judged(ctx.store, ctx.run, "What is 2 + 3?", "5", "positive", "The response is correct: 2 + 3 = 5.")
    with ctx.store.transaction() as tx:
        tx.record_round_step(ctx.run, 1, "refine", 1.0)
    asked = []

    def trainer(config, triples, out_dir, init_adapter):
        asked.append(config.cut.objective)
        return train_in_process(config, triples, out_dir, init_adapter)

    training.train(ctx, 1, "rule:addition", trainer)
    assert asked == ["sft"]
