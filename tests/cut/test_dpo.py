"""DPO from judged samples: the loss, the pairs, a round of it, and what it does to the shipped model."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from cut.config import CutConfig
from cut.data import Triple
from cut.dpo import dpo_loss, pair_rows, with_reference
from cut.pairs import preference_pairs
from cut.trainer import train
from rounds import context, train as training
from tasks.training import train_in_process
from online_cut.config import parse_config
from storage import records
from storage.store import Store


def reference_dpo(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta):
    """Pair by pair in plain floats: −log σ(β·((π_w − ref_w) − (π_l − ref_l))), with its gradient in π_w."""
    margins = [beta * ((pc - rc) - (pr - rr))
               for pc, pr, rc, rr in zip(policy_chosen, policy_rejected, reference_chosen, reference_rejected)]
    n = len(margins)
    loss = sum(math.log(1 + math.exp(-m)) for m in margins) / n
    grad_chosen = [-beta / (1 + math.exp(m)) / n for m in margins]
    return loss, sum(margins) / n, sum(m > 0 for m in margins) / n, grad_chosen


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpo_loss_matches_a_hand_written_reference(beta, seed):
    g = torch.Generator().manual_seed(seed)
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = (
        -torch.rand(6, generator=g, dtype=torch.float64) * 30 for _ in range(4)
    )
    policy_chosen.requires_grad_()
    out = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    out.loss.backward()
    loss, margin, accuracy, grad_chosen = reference_dpo(
        policy_chosen.tolist(), policy_rejected.tolist(), reference_chosen.tolist(), reference_rejected.tolist(), beta
    )
    assert out.loss.item() == pytest.approx(loss, abs=1e-9)
    assert out.reward_margin.item() == pytest.approx(margin, abs=1e-9)
    assert out.reward_accuracy.item() == accuracy
    assert policy_chosen.grad.tolist() == pytest.approx(grad_chosen, abs=1e-9)


def triple(prompt: str, response: str, negative: bool, score: float | None = None) -> Triple:
    return Triple(prompt, "", response, "It is wrong." if negative else None, score)


def as_text(triples, pairs):
    return [(triples[c].response, triples[r].response) for c, r in pairs]


def test_pairs_are_disjoint_from_one_prompt_chosen_by_verdict():
    triples = [triple("p", "good-1", False), triple("p", "bad-1", True), triple("p", "good-2", False),
               triple("p", "bad-2", True), triple("q", "good-3", False), triple("r", "bad-3", True)]
    pairs = preference_pairs(triples, seed=0)
    assert len(pairs) == 2  # q and r each have one response: a pair never crosses prompts
    assert all(triples[c].response.startswith("good") and triples[r].response.startswith("bad") for c, r in pairs)
    assert len({i for pair in pairs for i in pair}) == 4


def test_the_score_decides_where_both_have_one_and_ties_never_pair():
    triples = [triple("p", "neg-scored-6", True, 6.0), triple("p", "pos-scored-3", False, 3.0),
               triple("t", "same-a", False, 8.0), triple("t", "same-b", False, 8.0),
               triple("u", "pos-a", False), triple("u", "pos-b", False)]
    assert as_text(triples, preference_pairs(triples, seed=0)) == [("neg-scored-6", "pos-scored-3")]


def test_pairs_are_seeded_and_do_not_depend_on_the_order_of_the_triples():
    triples = [triple(f"prompt {i % 5}", f"answer {i}", negative=i % 3 == 0, score=(i * 7) % 10 + 1 if i % 2 else None)
               for i in range(40)]
    shuffled = triples[:]
    random.Random(1).shuffle(shuffled)
    first = as_text(triples, preference_pairs(triples, seed=3))
    assert first and sorted(first) == sorted(as_text(shuffled, preference_pairs(shuffled, seed=3)))
    assert first == as_text(triples, preference_pairs(triples, seed=3))
    assert sorted(first) != sorted(as_text(triples, preference_pairs(triples, seed=4)))


ARITHMETIC = [
    triple("What is 2 + 3? Reply with just the number.", "5", False),
    triple("What is 2 + 3? Reply with just the number.", "6", True),
    triple("What is 4 + 4? Reply with just the number.", "8", False),
    triple("What is 4 + 4? Reply with just the number.", "9", True),
    triple("What is 1 + 6? Reply with just the number.", "7", False),
    triple("What is 1 + 6? Reply with just the number.", "5", True),
]


def test_a_dpo_round_starts_at_its_reference_and_reports_its_metrics(tiny_model, tmp_path):
    config = CutConfig(objective="dpo", micro_batch_size=2, grad_accum=1, epochs=2)
    result = train(config, str(tiny_model), ARITHMETIC, tmp_path / "dpo", progress=False)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert len(result.pairs) == 3 and result.rows == 6
    assert [s["step"] for s in result.steps] == [1, 2, 3, 4]  # 2 micro-batches of at most 2 pairs, 2 epochs
    for step in result.steps:
        assert set(step) >= {"loss", "reward_margin", "reward_accuracy", "pairs", "tokens_per_s"}
    assert sorted(step["pairs"] for step in result.steps) == [1, 1, 2, 2]
    # A fresh LoRA is the base model, so the first step's policy is its reference: margin 0, loss log 2.
    assert result.steps[0]["reward_margin"] == pytest.approx(0, abs=1e-5)
    assert result.steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_a_dpo_round_without_a_pair_refuses_to_train(tiny_model, tmp_path):
    only_positives = [t for t in ARITHMETIC if not t.negative]
    with pytest.raises(ValueError, match="no DPO pair to train on: 3 triples, 0 pairs"):
        train(CutConfig(objective="dpo"), str(tiny_model), only_positives, tmp_path, progress=False)


def dpo_context(folder: Path, tiny_model: Path) -> context.RunContext:
    config = parse_config(
        {
            "model": {"path": str(tiny_model)},
            "prompts": {"suite": "addition", "per_round": 4},
            "cut": {"objective": "dpo", "micro_batch_size": 2, "max_length": 96},
            "storage": {"db": str(folder / "store.duckdb"), "adapters_dir": str(folder / "adapters")},
        },
        "test",
    )
    return context.RunContext(config, "unit", Store.from_config(config.storage))


def store_round(ctx: context.RunContext, judged: list[Triple]) -> None:
    ctx.store.add_run(ctx.run)
    context.start_round(ctx, 1)
    for index, t in enumerate(judged):
        prompt = records.Prompt(instruction=t.instruction)
        response = records.Response(run=ctx.run, round=1, prompt_id=prompt.prompt_id, text=t.response, sample_index=index)
        ctx.store.add_prompts([prompt])
        ctx.store.add_responses([response])
        ctx.store.add_judgments([records.Judgment(response_id=response.response_id, judge="rule:addition",
                                                  verdict="negative" if t.negative else "positive",
                                                  judgment=t.judgment, score=t.score)])


def test_a_resumed_dpo_round_trains_on_the_same_pairs(tiny_model, tmp_path):
    ctx = dpo_context(tmp_path, tiny_model)
    store_round(ctx, ARITHMETIC + [triple("What is 3 + 3? Reply with just the number.", f"{n}", n != 6, score=10 - abs(6 - n))
                                   for n in (4, 6, 7, 9)])
    candidate = training.train(ctx, 1, "rule:addition", train_in_process)
    stored_steps = ctx.store.query("SELECT loss, l1, reward_margin, reward_accuracy, pairs FROM training_steps ORDER BY step")
    assert stored_steps and all(s["l1"] is None and s["pairs"] >= 1 and s["reward_margin"] is not None
                                for s in stored_steps)

    def attempt(folder: str) -> tuple[list, list]:
        # What a rerun of the round does: read the round's triples from the store afresh, train again.
        again = context.RunContext(ctx.config, ctx.run, Store.from_config(ctx.config.storage))
        stored = training.training_triples(again, 1, "rule:addition")
        triples = [Triple(t.instruction, t.input, t.response, t.judgment, t.score) for t in stored]
        result = train(ctx.config.cut, again.base_model, triples, tmp_path / folder, progress=False)
        return [(stored[c].response_id, stored[r].response_id) for c, r in result.pairs], result.steps

    first_pairs, first_steps = attempt("first")
    resumed_pairs, resumed_steps = attempt("resumed")
    assert len(first_pairs) == 5 and resumed_pairs == first_pairs
    assert [s["loss"] for s in resumed_steps] == pytest.approx([s["loss"] for s in first_steps], abs=1e-6)
    assert [s["loss"] for s in first_steps] == pytest.approx([s["loss"] for s in stored_steps], abs=1e-6)
    assert candidate is not None


def test_a_dpo_round_without_a_pair_trains_nothing_and_says_so(tiny_model, tmp_path, caplog):
    ctx = dpo_context(tmp_path, tiny_model)
    store_round(ctx, [t for t in ARITHMETIC if t.negative])
    with caplog.at_level(logging.WARNING, logger="rounds"):
        assert training.train(ctx, 1, "rule:addition", train_in_process) is None
    assert "no DPO pair among 3 triples" in caplog.text
    assert ctx.state(1).train_s is not None and not ctx.store.adapters(ctx.run)


def test_an_sft_round_without_a_positive_trains_nothing_and_says_so(tiny_model, tmp_path, caplog):
    ctx = dpo_context(tmp_path, tiny_model)
    ctx = context.RunContext(ctx.config.model_copy(update={"cut": ctx.config.cut.model_copy(update={"objective": "sft"})}),
                           ctx.run, ctx.store)
    store_round(ctx, [t for t in ARITHMETIC if t.negative])
    with caplog.at_level(logging.WARNING, logger="rounds"):
        assert training.train(ctx, 1, "rule:addition", train_in_process) is None
    assert "no positive among 3 triples (sft trains on positives only)" in caplog.text
    assert ctx.state(1).train_s is not None and not ctx.store.adapters(ctx.run)


@pytest.mark.integration
def test_a_dpo_round_raises_the_chosen_minus_rejected_margin_of_the_shipped_model(shipped_model, tmp_path):
    triples = [
        triple(f"What is {a} + {b}? Reply with just the number.", answer, wrong)
        for a, b in [(2, 3), (4, 4), (1, 6), (3, 5), (2, 7), (6, 1), (5, 3), (4, 2)]
        for answer, wrong in [(str(a + b), False), (str(a + b + 1), True)]
    ]
    config = CutConfig(objective="dpo", micro_batch_size=4, epochs=3, learning_rate=4e-4, max_length=128)
    result = train(config, str(shipped_model), triples, tmp_path / "dpo", progress=False)
    assert len(result.pairs) == 8

    tokenizer = AutoTokenizer.from_pretrained(shipped_model)
    pairs, _ = pair_rows(triples, result.pairs, tokenizer, config)

    def mean_margin(model) -> float:
        scored = with_reference(model, pairs, config, tokenizer.eos_token_id)
        return sum(chosen - rejected for chosen, rejected in (p.reference for p in scored)) / len(scored)

    base = AutoModelForCausalLM.from_pretrained(shipped_model)
    before = mean_margin(base)
    after = mean_margin(PeftModel.from_pretrained(base, str(result.adapter_dir)))
    assert after > before + 0.5, (before, after)
    assert result.steps[-1]["reward_accuracy"] >= 0.5
