"""The round's steps as plain functions (no Prefect): each is idempotent, the gate decides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cut.data import Triple
from cut.fingerprint import read_fingerprint
from rounds import context, evaluate as evaluating, gate as gating, judge as judging, sample as sampling, train as training
from storage import records
from tasks.training import train_in_process
from online_cut.config import parse_config
from samplers.base import AdapterMismatchError
from samplers.factory import open_sampler
from random_adapter import write_random_adapter
from samplers.records import Prompt
from storage.store import Store


def make_context(folder: Path, tiny_model: Path, **evaluation) -> context.RunContext:
    config = parse_config(
        {
            "model": {"path": str(tiny_model)},
            "prompts": {"suite": "addition", "per_round": 4},
            "sampler": {"backend": "transformers", "n": 2, "max_tokens": 6},
            # At the default 4e-4 a random model's probe log-probs moved only 2e-3 to 9e-3, next to the 1e-3
            # that counts as a change (samplers/base.py): the attach check then failed now and then.
            "cut": {"positive_ratio": None, "micro_batch_size": 4, "max_length": 96, "learning_rate": 1e-2},
            "storage": {"db": str(folder / "store.duckdb"), "adapters_dir": str(folder / "adapters")},
            "evaluation": {"n": 4, **evaluation},
        },
        "test",
    )
    return context.RunContext(config, "unit", Store.from_config(config.storage))


def test_a_round_run_twice_writes_everything_once(tiny_model: Path, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, tiny_model)
    ctx.store.add_run(ctx.run)
    judge = evaluating.suite_critic("addition")
    with open_sampler(ctx.config.sampler, ctx.base_model) as sampler:
        context.start_round(ctx, 1)
        assert sampling.sample(ctx, sampler, 1) == 8
        assert judging.judge(ctx, judge, 1) == 8
        candidate = training.train(ctx, 1, judge.judge_id, train_in_process)
        weights = Path(candidate.path) / "adapter_model.safetensors"
        trained_at = weights.stat().st_mtime_ns
        step_seconds = [s["seconds"] for s in ctx.store.query("SELECT seconds FROM training_steps")]
        assert step_seconds and all(s > 0 for s in step_seconds)
        assert sum(step_seconds) <= ctx.state(1).train_s  # the steps are inside the round's train step
        scores = evaluating.evaluate(ctx, sampler, judge, 1, candidate)
        promoted = gating.promote(ctx, 1, candidate, scores, wall_s=1.0)

        # The same round again: every step sees its done mark and does nothing.
        context.start_round(ctx, 1)
        assert sampling.sample(ctx, sampler, 1) == 0
        assert judging.judge(ctx, judge, 1) == 0
        assert training.train(ctx, 1, judge.judge_id, train_in_process).adapter_id == candidate.adapter_id
        assert weights.stat().st_mtime_ns == trained_at
        assert evaluating.evaluate(ctx, sampler, judge, 1, candidate) == scores
        assert gating.promote(ctx, 1, candidate, scores, wall_s=1.0) == promoted

    counts = ctx.store.query(
        "SELECT (SELECT count(*) FROM responses) AS responses, (SELECT count(*) FROM judgments) AS judgments, "
        "(SELECT count(*) FROM adapters) AS adapters, (SELECT count(*) FROM evaluations) AS evaluations"
    )
    assert counts == [{"responses": 8, "judgments": 8, "adapters": 1, "evaluations": 2}]
    live = ctx.live_adapter()
    assert (live is not None and live.adapter_id == candidate.adapter_id) == promoted


def live_after_round_1(ctx: context.RunContext, sampler) -> records.Adapter:
    """Round 1 sampled, judged and trained; its candidate made live by hand, whatever the gate says."""
    judge = evaluating.suite_critic("addition")
    ctx.store.add_run(ctx.run)
    context.start_round(ctx, 1)
    sampling.sample(ctx, sampler, 1)
    judging.judge(ctx, judge, 1)
    candidate = training.train(ctx, 1, judge.judge_id, train_in_process)
    ctx.store.set_adapter_status(candidate.adapter_id, "live")
    context.start_round(ctx, 2)
    return candidate


def test_the_fingerprint_check_of_a_rounds_adapter_lands_in_the_store(tiny_model, tmp_path) -> None:
    ctx = make_context(tmp_path, tiny_model)
    with open_sampler(ctx.config.sampler, ctx.base_model) as sampler:
        candidate = live_after_round_1(ctx, sampler)
        sampling.sample(ctx, sampler, 2)
    assert ctx.adapter(candidate.adapter_id).fingerprint == read_fingerprint(Path(candidate.path)).as_dict()
    (check,) = ctx.store.query("SELECT * FROM adapter_checks")
    assert (check["round"], check["step"], check["adapter_id"], check["backend"]) == (2, "sample", candidate.adapter_id,
                                                                                      "transformers")
    assert check["fingerprint_tokens"] > 0 and 0 <= check["fingerprint_mean_abs"] <= check["tolerance_mean_abs"]
    assert check["verdict"] == "match" and check["noise_measured"] and check["parent_mean_abs"] > 0
    (summary,) = ctx.store.query("SELECT * FROM round_summary WHERE round = 2")
    assert (summary["fingerprint_max_abs"], summary["fingerprint_mean_abs"]) == (
        check["fingerprint_max_abs"], check["fingerprint_mean_abs"])


def test_a_round_whose_adapter_folder_holds_other_weights_fails_before_sampling(tiny_model, tmp_path) -> None:
    ctx = make_context(tmp_path, tiny_model)
    with open_sampler(ctx.config.sampler, ctx.base_model) as sampler:
        candidate = live_after_round_1(ctx, sampler)
        # The folder overwritten with other weights and their own fingerprint: only the store's copy tells.
        shutil.rmtree(candidate.path)
        write_random_adapter(tiny_model, Path(candidate.path), seed=3, rank=4)
        with pytest.raises(AdapterMismatchError, match=f"adapter '{candidate.adapter_id}'"):
            sampling.sample(ctx, sampler, 2)
    assert ctx.store.query("SELECT count(*) AS n FROM responses WHERE round = 2") == [{"n": 0}]
    assert ctx.store.query("SELECT count(*) AS n FROM adapter_checks") == [{"n": 0}]


def test_the_sample_step_samples_with_the_runs_settings_not_the_samplers_own(tiny_model, tmp_path) -> None:
    """A sampler opened with other settings than the run's (the tests' session engines, opened once
    for many runs): the round's n and max_tokens are the run's, as its log line says."""
    ctx = make_context(tmp_path, tiny_model)
    ctx.store.add_run(ctx.run)
    other = ctx.config.sampler.model_copy(update={"n": 1, "max_tokens": 2})
    with open_sampler(other, ctx.base_model) as sampler:
        context.start_round(ctx, 1)
        assert sampling.sample(ctx, sampler, 1) == 4 * 2
    stored = ctx.store.query("SELECT sampling FROM responses")
    assert {row["sampling"]["n"] for row in stored} == {2} and {row["sampling"]["max_tokens"] for row in stored} == {6}


def test_the_first_prompts_are_stored_before_the_rest_is_sampled_and_a_rerun_stores_the_rest(
    tiny_model, tmp_path, monkeypatch
) -> None:
    """So a round has responses to show seconds after its engine is up (bench/round.py's
    time_to_first_sample_s); a crash while the rest is sampled loses nothing stored."""
    ctx = make_context(tmp_path, tiny_model)
    ctx.config.prompts.per_round = sampling.FIRST_PROMPTS + 3
    ctx.store.add_run(ctx.run)
    with open_sampler(ctx.config.sampler, ctx.base_model) as sampler:
        context.start_round(ctx, 1)
        sample = sampler.sample

        def crash_on_the_rest(prompts, settings=None):
            if len(prompts) != sampling.FIRST_PROMPTS:
                raise RuntimeError("engine died")
            return sample(prompts, settings)

        monkeypatch.setattr(sampler, "sample", crash_on_the_rest)
        with pytest.raises(RuntimeError, match="engine died"):
            sampling.sample(ctx, sampler, 1)
        first = ctx.store.query("SELECT response_id, text FROM responses ORDER BY response_id")
        assert len(first) == sampling.FIRST_PROMPTS * 2 and ctx.state(1).sample_s is None

        monkeypatch.setattr(sampler, "sample", sample)
        assert sampling.sample(ctx, sampler, 1) == 3 * 2
    stored = ctx.store.query("SELECT response_id, text FROM responses ORDER BY response_id")
    assert len(stored) == (sampling.FIRST_PROMPTS + 3) * 2 and set(map(str, first)) <= set(map(str, stored))
    assert ctx.state(1).sample_s is not None


@pytest.mark.parametrize(
    ("gate", "incumbent", "candidate", "promoted"),
    [
        ("no_worse", 0.50, 0.47, False),  # worse than the 0.02 margin
        ("no_worse", 0.50, 0.49, True),   # within the margin
        ("improve", 0.50, 0.50, False),
        ("improve", 0.50, 0.51, True),
    ],
)
def test_gate_promotes_only_within_the_margin(tiny_model, tmp_path, gate, incumbent, candidate, promoted) -> None:
    ctx = make_context(tmp_path, tiny_model, gate=gate, margin=0.02)
    passed, reason = gating.gate(ctx, {"incumbent": {"addition": incumbent}, "candidate": {"addition": candidate}})
    assert passed is promoted
    assert f"{candidate:.3f}" in reason and f"{incumbent:.3f}" in reason


def test_a_round_without_triples_keeps_the_incumbent(tiny_model, tmp_path) -> None:
    ctx = make_context(tmp_path, tiny_model)
    assert gating.gate(ctx, {"incumbent": {"addition": 0.3}})[1].startswith("no candidate: the round had nothing to train on")


def test_the_sampled_prompt_is_the_prompt_trained_on() -> None:
    assert Prompt("Translate.", "Bonjour").user_message() == Triple("Translate.", "Bonjour", "Hello", None).prompt


@pytest.mark.parametrize("processes", [1, 2])
def test_training_through_the_launcher_on_n_processes_gives_the_in_process_adapter(tiny_model, tmp_path,
                                                                                   processes) -> None:
    """launcher: accelerate runs `online-cut train` on `cut.processes` processes (torchrun on a CPU: issue 40,
    `accelerate launch --cpu --num_processes 2` started one). Each optimizer step takes the same micro-batches
    as grad_accum 2 in this process, and averages the same gradients: the same adapter, step for step
    (dropout off: both draw the same seed anyway)."""
    from safetensors.torch import load_file

    from cut.trainer import train as train_directly
    from tasks.training import train_launched

    triples = [Triple(f"What is {a} + 12?", "", f"{a + 12 + (a % 3)}", None if a % 3 == 0 else f"Wrong: {a + 12}.")
               for a in range(10, 26)]  # 4 micro-batches: 2 optimizer steps of 2
    config = parse_config(
        {"model": {"path": str(tiny_model)},
         "cut": {"positive_ratio": None, "micro_batch_size": 4, "max_length": 64, "launcher": "accelerate",
                 "processes": processes, "grad_accum": 2 // processes, "lora": {"dropout": 0.0}}},
        "test",
    )
    launched = train_launched(config, triples, tmp_path / "launched", None)
    in_process = config.cut.model_copy(update={"launcher": "in-process", "processes": 1, "grad_accum": 2})
    direct = train_directly(in_process, config.model.name_or_path(), triples, tmp_path / "direct", progress=False)

    assert (launched.processes, len(launched.steps)) == (processes, len(direct.steps)) == (processes, 2)
    assert [s["loss"] for s in launched.steps] == pytest.approx([s["loss"] for s in direct.steps], abs=1e-6)
    assert launched.flagged.keys() == direct.flagged.keys() and (launched.rows, launched.dropped) == (direct.rows, 0)
    ours, theirs = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("launched", "direct"))
    assert ours.keys() == theirs.keys()
    assert any(t.abs().max() > 0 for name, t in ours.items() if "lora_B" in name)  # training moved the weights
    assert max((ours[name] - theirs[name]).abs().max().item() for name in ours) < 1e-6
    assert not (tmp_path / "launched.launch").exists()


def test_an_instruction_file_is_scored_by_the_runs_judge(tiny_model, tmp_path) -> None:
    held_out = tmp_path / "heldout.jsonl"
    held_out.write_text("".join(f'{{"instruction": "What is {a} + 11? Reply with just the number."}}\n' for a in range(20, 26)))
    ctx = make_context(tmp_path, tiny_model, suites=[], file=str(held_out), n=4)
    ctx.store.add_run(ctx.run)
    context.start_round(ctx, 1)
    run_judge = evaluating.suite_critic("addition")  # stands for the configured judge: any Judge scores the file
    with open_sampler(ctx.config.sampler, ctx.base_model) as sampler:
        scores = evaluating.evaluate(ctx, sampler, run_judge, 1, None)
    assert list(scores["incumbent"]) == ["file:heldout.jsonl"]
    assert ctx.store.query("SELECT suite, n, judge FROM evaluations") == [
        {"suite": "file:heldout.jsonl", "n": 4, "judge": "rule:addition"}
    ]


def test_replay_adds_a_seeded_share_of_earlier_rounds(tiny_model, tmp_path) -> None:
    from storage import records

    ctx = make_context(tmp_path, tiny_model)
    ctx = context.RunContext(ctx.config.model_copy(update={"replay": ctx.config.replay.model_copy(update={"share": 0.5})}),
                           ctx.run, ctx.store)
    ctx.store.add_run(ctx.run)
    for round in (1, 2, 3):
        prompt = records.Prompt(instruction=f"round {round}")
        responses = [records.Response(run=ctx.run, round=round, prompt_id=prompt.prompt_id, text=f"r{round}-{i}",
                                      sample_index=i) for i in range(4)]
        ctx.store.add_prompts([prompt])
        ctx.store.add_responses(responses)
        ctx.store.add_judgments(records.Judgment(response_id=r.response_id, judge="rule:addition", verdict="positive")
                                for r in responses)
    chosen = training.training_triples(ctx, 3, "rule:addition")
    assert [t.round for t in chosen] == [3, 3, 3, 3, chosen[4].round, chosen[5].round]
    assert {t.round for t in chosen[4:]} <= {1, 2}
    assert chosen == training.training_triples(ctx, 3, "rule:addition")  # a resumed round trains on the same set


def test_a_round_trains_with_its_lambda_from_lam_by_round(tiny_model, tmp_path, monkeypatch) -> None:
    from cut import trainer

    ctx = make_context(tmp_path, tiny_model)
    cut = ctx.config.cut.model_copy(update={"lam_by_round": [1.5, 1.2]})
    ctx = context.RunContext(ctx.config.model_copy(update={"cut": cut}), ctx.run, ctx.store)
    ctx.store.add_run(ctx.run)
    prompt = records.Prompt(instruction="What is 2 + 2?")
    ctx.store.add_prompts([prompt])
    for round in (1, 2, 3):
        context.start_round(ctx, round)
        responses = [records.Response(run=ctx.run, round=round, prompt_id=prompt.prompt_id, text=text, sample_index=i)
                     for i, text in enumerate(("4", "5"))]
        ctx.store.add_responses(responses)
        ctx.store.add_judgments([
            records.Judgment(response_id=responses[0].response_id, judge="rule:addition", verdict="positive"),
            records.Judgment(response_id=responses[1].response_id, judge="rule:addition", verdict="negative",
                             judgment="The sum is 4, not 5."),
        ])
    trained_with: list[float] = []

    def record_lambda(config, *args, **kwargs):
        trained_with.append(config.lam)
        raise RuntimeError("stop after recording")

    monkeypatch.setattr(trainer, "train", record_lambda)
    for round in (1, 2, 3):
        with pytest.raises(RuntimeError, match="stop after recording"):
            training.train(ctx, round, "rule:addition", train_in_process)
    assert trained_with == [1.5, 1.2, 1.2]  # the last value for the rounds after the list


def test_a_rounds_training_stores_its_detection_figures_and_the_round_table_shows_them(tiny_model, tmp_path) -> None:
    """Issue 38: where the judge gave spans, each CUT round stores how well the contrast found them."""
    from flows.artifacts import flagged_markdown, round_row
    from formats.spans import exact
    from judges.cache import stored_judgment
    from judges.judgment import Judgment

    ctx = make_context(tmp_path, tiny_model)
    ctx.config = ctx.config.model_copy(update={"cut": ctx.config.cut.model_copy(update={"detection": "spans"})})
    ctx.store.add_run(ctx.run)
    context.start_round(ctx, 1)
    prompt = records.Prompt(instruction="Add each pair: 7 + 1, 9 + 1.")
    texts = {"7 + 1 = 8, 9 + 1 = 11": "negative", "8, 10": "positive", "8, 12": "negative"}
    responses = [records.Response(run=ctx.run, round=1, prompt_id=prompt.prompt_id, text=text, sample_index=i,
                                  finish_reason="length" if i == 2 else "stop") for i, text in enumerate(texts)]
    judgments = [
        stored_judgment(r.response_id, "rule:sums", Judgment(
            status="ok", verdict=verdict, judgment="9 + 1 = 10." if verdict == "negative" else "Right.",
            spans=(exact(r.text, len(r.text) - 2, len(r.text)),) if verdict == "negative" else (), judge_id="rule:sums"))
        for r, verdict in zip(responses, texts.values())
    ]
    with ctx.store.transaction() as tx:
        tx.add_prompts([prompt])
        tx.add_responses(responses)
        tx.add_judgments(judgments)
        tx.record_round_step(ctx.run, 1, "sample", 1.0)
        tx.record_round_step(ctx.run, 1, "judge", 1.0)
    training.train(ctx, 1, "rule:sums", train_in_process)

    (stored,) = ctx.store.query("SELECT * FROM detections")
    assert (stored["round"], stored["rows"]) == (1, 2) and stored["span_tokens"] >= 2
    assert stored["flagged_in_spans"] <= min(stored["span_tokens"], stored["contrast_flagged"])
    flagged = ctx.store.query("SELECT response_id, list(token) AS tokens FROM flagged_tokens GROUP BY ALL")
    assert {"".join(row["tokens"]).strip() for row in flagged} == {"11", "12"}  # span detection: what was blamed
    row = round_row(ctx, 1)
    assert (row["detection_recall"], row["truncated"]) == (stored["recall"], 1)
    shown = flagged_markdown(ctx, 1)
    assert shown.count("(tokens the judge's spans cover in bold)") == 2 and "**11**" in shown and "**12**" in shown


@pytest.mark.parametrize(("placed", "pauses"), [(True, 0), (False, 1)])
def test_a_train_step_placed_on_a_pool_leaves_the_local_engine_running(tiny_model, tmp_path, monkeypatch, placed,
                                                                        pauses) -> None:
    """Issue 40: a placed train step paused (or, with `release`, restarted) the local engine every round
    although the training ran elsewhere."""
    from tasks import steps

    class Sampler:
        paused = 0

        def pause(self) -> None:
            self.paused += 1

    ctx = make_context(tmp_path, tiny_model)
    if placed:
        ctx.config = ctx.config.model_copy(update={"placement": ctx.config.placement.model_copy(
            update={"train": "gpu-pool", "exchange": str(tmp_path / "exchange")})})
    monkeypatch.setattr(steps.training, "train", lambda *args: None)
    sampler = Sampler()
    steps.train.fn(ctx, sampler, 1, "rule:addition")
    assert sampler.paused == pauses


def test_training_in_the_flows_process_gives_the_device_memory_back_before_the_sampler_wakes(
    tiny_model, tmp_path, monkeypatch
) -> None:
    """Issue 40: on a card shared with a sleeping engine, CUDA's cache kept the trainer's memory reserved."""
    import weakref

    import torch

    import cut.trainer

    models, released = [], []
    load = cut.trainer.load_lora_model

    def watched(*args):
        model = load(*args)
        models.append(weakref.ref(model))
        return model

    monkeypatch.setattr(cut.trainer, "load_lora_model", watched)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: released.append(models[0]() is None))
    triples = [Triple("Add 2 and 3.", "", "5", None), Triple("Add 4 and 4.", "", "9", "Wrong: 4 + 4 = 8.")]
    ctx = make_context(tmp_path, tiny_model)
    train_in_process(ctx.config, triples, tmp_path / "adapter", None)
    assert released == [True]  # emptied once, with the trained model already gone


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_the_baselines_and_dpo_train_to_completion_on_two_processes(tiny_model, tmp_path, objective) -> None:
    from tasks.training import train_launched

    triples = [Triple(f"What is {a} + 12?", "", answer, judgment)
               for a in range(10, 18)
               for answer, judgment in ((f"{a + 12}", None), (f"{a + 13}", f"Wrong: {a + 12}."))]
    config = parse_config(
        {"model": {"path": str(tiny_model)},
         "cut": {"objective": objective, "positive_ratio": None, "micro_batch_size": 2, "max_length": 64,
                 "launcher": "accelerate", "processes": 2}},
        "test",
    )
    result = train_launched(config, triples, tmp_path / objective, None)
    assert result.processes == 2 and result.steps and (tmp_path / objective / "adapter_model.safetensors").is_file()
    assert len(result.pairs) == (8 if objective == "dpo" else 0)


def test_a_training_process_that_dies_fails_the_step_naming_its_rank_and_the_rerun_trains(tiny_model, tmp_path) -> None:
    import os
    import signal
    import threading
    import time

    import psutil

    from tasks.training import train_launched
    from cut.training_folder import LaunchError

    triples = [Triple(f"What is {a} + 12?", "", f"{a + 12}", None) for a in range(10, 26)]
    config = parse_config(
        {"model": {"path": str(tiny_model)},
         "cut": {"objective": "sft", "positive_ratio": None, "micro_batch_size": 1, "max_length": 64,
                 "launcher": "accelerate", "processes": 2}},
        "test",
    )
    outcome = {}

    def launch() -> None:
        try:
            train_launched(config, triples, tmp_path / "adapter", None)
        except LaunchError as exc:
            outcome["error"] = str(exc)

    def rank_one() -> psutil.Process | None:
        for process in psutil.Process().children(recursive=True):
            try:
                if process.environ().get("RANK") == "1" and "online_cut.cli" in process.cmdline():
                    return process
            except psutil.Error:
                continue
        return None

    launcher = threading.Thread(target=launch)
    launcher.start()
    deadline = time.monotonic() + 60
    while (victim := rank_one()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert victim is not None, "rank 1 never started"
    time.sleep(2)  # into its imports (they take longer) or its steps: either way it dies mid-launch
    os.kill(victim.pid, signal.SIGKILL)
    launcher.join(120)
    assert not launcher.is_alive()
    assert "training process rank 1 of 2 failed" in outcome["error"] and "SIGKILL" in outcome["error"]
    assert not (tmp_path / "adapter").exists()  # nothing half-written where the adapter goes
    assert not [p for p in psutil.Process().children(recursive=True) if "online_cut.cli" in " ".join(p.cmdline())]

    rerun = train_launched(config, triples, tmp_path / "adapter", None)  # the round's rerun
    assert rerun.processes == 2 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_two_machines_of_one_process_each_train_one_adapter_from_their_accelerate_configs(tiny_model, tmp_path) -> None:
    """cut.accelerate_config on 2 'machines' on 127.0.0.1: the flow's train step launches machine 0, and the
    other machine runs the command the step logs, with its own file (machine_rank 1) at the path."""
    import socket
    import subprocess
    import threading
    import time

    import yaml

    from cut.training_folder import TRIPLES_FILE, train_command
    from tasks.training import train_launched

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    files = []
    for rank in (0, 1):
        path = tmp_path / f"machine-{rank}" / "accelerate.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
                                        "num_machines": 2, "machine_rank": rank, "num_processes": 2,
                                        "main_process_ip": "127.0.0.1", "main_process_port": port}))
        files.append(path)
    triples = [Triple(f"What is {a} + 12?", "", f"{a + 12}", None if a % 2 else f"Wrong: {a + 12}.") for a in range(10, 18)]
    config = parse_config(
        {"model": {"path": str(tiny_model)},
         "cut": {"positive_ratio": None, "micro_batch_size": 2, "max_length": 64, "launcher": "accelerate",
                 "processes": 2, "accelerate_config": str(files[0])}},
        "test",
    )
    out_dir = tmp_path / "adapter"
    launched = {}
    machine_0 = threading.Thread(target=lambda: launched.update(result=train_launched(config, triples, out_dir, None)))
    machine_0.start()
    work = out_dir.with_name("adapter.launch")
    deadline = time.monotonic() + 30
    while not (work / TRIPLES_FILE).is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    other = train_command(work, out_dir, None, launcher="accelerate", processes=2, accelerate_config=files[1])
    assert other[other.index("--node_rank") + 1] == "1" and other[other.index("--nproc_per_node") + 1] == "1"
    machine_1 = subprocess.run(other, capture_output=True, text=True, timeout=120)
    machine_0.join(120)
    assert machine_1.returncode == 0, machine_1.stderr[-2000:]
    result = launched["result"]
    assert result.processes == 2 and result.rows == len(triples) and result.steps
    assert (out_dir / "adapter_model.safetensors").is_file()


def test_an_accelerate_config_that_disagrees_with_the_run_is_refused_naming_the_file_and_key(tmp_path) -> None:
    from online_cut.config import ConfigError

    machines = tmp_path / "accelerate.yaml"
    machines.write_text("num_machines: 2\nmachine_rank: 0\nnum_processes: 4\nmain_process_ip: 10.0.0.1\n")
    with pytest.raises(ConfigError, match="processes is 2, but accelerate_config .* starts num_processes 4"):
        parse_config({"cut": {"launcher": "accelerate", "processes": 2, "accelerate_config": str(machines)}}, "test")
    machines.write_text("num_machines: 2\nmachine_rank: 2\nnum_processes: 2\nmain_process_ip: 10.0.0.1\n")
    with pytest.raises(ConfigError, match="machine_rank 2 is not below num_machines 2"):
        parse_config({"cut": {"launcher": "accelerate", "processes": 2, "accelerate_config": str(machines)}}, "test")
    machines.write_text("num_machines: 2\nnum_processes: 2\n")
    with pytest.raises(ConfigError, match="main_process_ip must name the main machine"):
        parse_config({"cut": {"launcher": "accelerate", "processes": 2, "accelerate_config": str(machines)}}, "test")
    with pytest.raises(ConfigError, match="accelerate_config needs launcher: accelerate"):
        parse_config({"cut": {"accelerate_config": str(machines)}}, "test")


def test_on_gpus_the_accelerate_config_goes_to_accelerate_launch_as_it_is(tmp_path, monkeypatch) -> None:
    import torch

    from cut.training_folder import train_command

    machines = tmp_path / "accelerate.yaml"
    machines.write_text("num_machines: 2\nmachine_rank: 1\nnum_processes: 16\nmain_process_ip: 10.0.0.1\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    command = train_command(tmp_path, tmp_path / "out", None, launcher="accelerate", processes=16,
                            accelerate_config=machines)
    launch = command.index("accelerate.commands.launch")
    assert command[launch + 1: launch + 3] == ["--config_file", str(machines)]
    assert "--num_processes" not in command and command[command.index("online_cut.cli") + 1] == "train"
