"""The LoRA trainer on real models: the adapter it saves, and what CUT does to flagged tokens."""

from __future__ import annotations

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from cut.config import CutConfig, LoraConfig
from cut.data import Triple, load_triples
from cut.rows import build_rows
from cut.scoring import score_rows
from no_grad_scores import mean_nll
from cut.trainer import train


def short_negatives(path, tokenizer, count, max_tokens):
    """The first `count` negative triples with short responses and judgments: the test's compute stays small."""
    negatives = [t for t in load_triples(path) if t.negative]
    short = [t for t in negatives if max(len(tokenizer(text)["input_ids"]) for text in (t.response, t.judgment)) <= max_tokens]
    return short[:count]


def arithmetic_triples(items):
    return [Triple(instruction, "", response, judgment) for instruction, response, judgment in items]


def test_every_objective_trains_and_saves_a_peft_adapter(tiny_model, tmp_path):
    triples = arithmetic_triples([("Add 2 and 3.", "5", None), ("Add 4 and 4.", "9", "Wrong: 4 + 4 = 8.")])
    for objective in ("cut", "sft", "hindsight"):
        config = CutConfig(objective=objective, micro_batch_size=1, grad_accum=2, positive_ratio=None, epochs=2)
        result = train(config, str(tiny_model), triples, tmp_path / objective, progress=False)
        assert (result.adapter_dir / "adapter_config.json").is_file()
        assert (result.adapter_dir / "adapter_model.safetensors").is_file()
        assert [s["step"] for s in result.steps] == [1, 2]
        for step in result.steps:
            assert set(step) >= {"loss", "l1", "l2", "flagged_frac", "tokens_per_s", "seconds"} and step["seconds"] > 0
            assert step["loss"] == pytest.approx(step["l1"] + step["l2"])
        if objective != "cut":
            assert all(s["l1"] == 0 and s["flagged_frac"] == 0 for s in result.steps)
    assert result.rows == 2 and list(result.flagged) == []  # hindsight: no Align-N row


def test_forward_trains_both_rows_of_each_triple_and_counts_triples(tiny_model, tmp_path):
    triples = arithmetic_triples([("Add 2 and 3.", "5", None), ("Add 4 and 4.", "9", "Wrong: 4 + 4 = 8.")])
    config = CutConfig(objective="forward", micro_batch_size=1, positive_ratio=None)
    result = train(config, str(tiny_model), triples, tmp_path, progress=False)
    assert result.rows == 2 and len(result.steps) == 4  # p(y|x) and p(j|[x, y]) rows, one step each
    assert all(s["l1"] == 0 and s["loss"] == pytest.approx(s["l2"]) for s in result.steps)


def test_example_reduction_halves_an_align_n_rows_loss_as_the_official_code(tiny_model, tmp_path):
    triples = arithmetic_triples([("Add 4 and 4.", "9", "Wrong: 4 + 4 = 8.")])
    config = CutConfig(reduction="example", micro_batch_size=1)
    [step] = train(config, str(tiny_model), triples, tmp_path, progress=False).steps
    assert step["loss"] == pytest.approx((step["l1"] + step["l2"]) / 2)


def test_a_round_of_one_optimizer_step_changes_the_adapter(tiny_model, tmp_path):
    """The default warm-up must not leave a tiny round's only step at learning rate 0."""
    from safetensors.torch import load_file

    triples = arithmetic_triples([("Add 2 and 3.", "5", None)])
    result = train(CutConfig(objective="sft"), str(tiny_model), triples, tmp_path, progress=False)
    assert len(result.steps) == 1
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any(tensor.abs().max() > 0 for name, tensor in weights.items() if "lora_B" in name)


def test_training_refuses_to_replace_a_folder_that_is_not_an_adapter(tiny_model, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    triples = arithmetic_triples([("Add 4 and 4.", "9", "Wrong: 4 + 4 = 8.")])
    with pytest.raises(ValueError, match="not an adapter folder"):
        train(CutConfig(), str(tiny_model), triples, tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_training_continues_from_an_existing_adapter(tiny_model, tmp_path):
    triples = arithmetic_triples([("Add 4 and 4.", "9", "Wrong: 4 + 4 = 8.")])
    config = CutConfig(micro_batch_size=1, epochs=1, lora=LoraConfig(dropout=0.0))  # eval mode scores the same
    first = train(config, str(tiny_model), triples, tmp_path / "a1", progress=False)
    second = train(config, str(tiny_model), triples, tmp_path / "a2", init_adapter=first.adapter_dir, progress=False)
    scores_first = second.first_scores[0].p_aligned
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = build_rows(triples, tokenizer, config).rows
    with_first = PeftModel.from_pretrained(base, str(first.adapter_dir))
    assert score_rows(with_first, rows, config, tokenizer.eos_token_id)[0].p_aligned == pytest.approx(scores_first, rel=1e-5)


def test_reported_flags_are_the_ones_the_loss_used_on_each_rows_first_visit(tiny_model, tmp_path, monkeypatch):
    """No scoring pass before training: the flags come from the training forward itself. One
    micro-batch, so every row's first visit is step 1, where the fresh LoRA (B = 0) is the base model."""
    import torch

    from cut.batches import collate
    from cut.logprobs import response_logprobs
    from cut.objective import cut_loss

    triples = arithmetic_triples([(f"Add {a} and {a}.", f"The sum of {a} and {a} is {2 * a + 1}.", f"Wrong: {2 * a}.")
                                  for a in range(1, 5)] + [("Add 1 and 1.", "2", None)])
    config = CutConfig(micro_batch_size=8, positive_ratio=None, lam=1.0, lora=LoraConfig(dropout=0.0))
    import cut.trainer

    passes = []  # the trainer's forward passes: a scoring pass before training would show here
    monkeypatch.setattr(cut.trainer, "response_logprobs", lambda *a: passes.append(1) or response_logprobs(*a))
    result = train(config, str(tiny_model), triples, tmp_path, progress=False)
    assert len(passes) == len(result.steps) == 1  # one forward per micro-batch, none before training

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = build_rows(triples, tokenizer, config).rows
    batch = collate(rows, tokenizer.eos_token_id)
    with torch.no_grad():
        logp_al, logp_mis = response_logprobs(AutoModelForCausalLM.from_pretrained(tiny_model), batch, config.logit_chunk_tokens)
    loss_flags = cut_loss(logp_al, logp_mis, batch.mask, batch.negative, lam=config.lam).flagged
    expected = {row.triple_index: loss_flags[b].nonzero().flatten().tolist() for b, row in enumerate(batch.rows) if row.negative}
    assert any(expected.values())  # the case flags something
    assert {i: [t.index for t in tokens] for i, tokens in result.flagged.items()} == expected
    assert [s.triple_index for s in result.first_scores] == [row.triple_index for row in rows]
    for score, row in zip(result.first_scores, rows):
        assert len(score.p_aligned) == row.response_len and (score.p_misaligned is None) == (not row.negative)


@pytest.mark.integration
def test_cut_lowers_l2_and_the_misalign_probability_of_flagged_tokens(shipped_model, cut_paper_iter1, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(shipped_model)
    triples = short_negatives(cut_paper_iter1, tokenizer, count=8, max_tokens=40)
    # On the 135M model the MLE terms (every aligned token, the unflagged Misalign tokens) lift
    # the flagged tokens too through the shared LoRA weights; the paper's α=1 lost that tug of
    # war on 16 rows (mean flagged p_misaligned 0.244 -> 0.271 measured), α=4 wins it (on these
    # 8 rows 0.264 -> 0.199, while the NLL falls 1.182 -> 1.019).
    config = CutConfig(epochs=2, max_length=256, micro_batch_size=4, learning_rate=4e-4, alpha=4.0)
    result = train(config, str(shipped_model), triples, tmp_path / "adapter", progress=False)
    assert result.rows == 8 and result.dropped == 0

    negative_tokens = sum(len(s.p_aligned) for s in result.first_scores)
    flagged_frac = sum(len(s.flagged) for s in result.first_scores) / negative_tokens
    assert 0.01 <= flagged_frac <= 0.60
    flagged_token = next(tok for tokens in result.flagged.values() for tok in tokens)
    assert flagged_token.p_aligned > config.lam * flagged_token.p_misaligned

    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(shipped_model), str(result.adapter_dir))
    rows = build_rows(triples, tokenizer, config).rows
    after = score_rows(trained, rows, config, tokenizer.eos_token_id)
    assert mean_nll(after) < mean_nll(result.first_scores)

    def mean_flagged_p_misaligned(scores):
        values = [s.p_misaligned[t] for s, b in zip(scores, result.first_scores) for t in b.flagged]
        return sum(values) / len(values)

    assert mean_flagged_p_misaligned(after) < mean_flagged_p_misaligned(result.first_scores)
