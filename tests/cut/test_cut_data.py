"""Triples files, class balance, token rows and batches (tokenizer and tiny model only: seconds)."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from cut.batches import collate, micro_batches
from cut.config import CutConfig
from cut.data import Triple, balanced_indices, load_triples
from cut.logprobs import response_logprobs
from cut.rows import build_rows, prompt_ids
from formats.triple_file import CutFormatError


@pytest.fixture(scope="module")
def tokenizer(shipped_model):
    return AutoTokenizer.from_pretrained(shipped_model)


def triple(judgment=None, response="The answer is 42.", instruction="What is six times seven?", input=""):
    return Triple(instruction, input, response, judgment)


def test_cut_paper_file_loads_with_input_joined_by_newline(cut_paper_iter1):
    triples = load_triples(cut_paper_iter1)
    assert len(triples) == 1000 and sum(t.negative for t in triples) == 287
    with_input = next(t for t in triples if t.input)
    assert with_input.prompt == with_input.instruction + "\n" + with_input.input


def test_jsonl_loads_and_bad_record_names_file_and_line(tmp_path):
    good = {"instruction": "a", "input": "", "output": "b", "judgment": None}
    path = tmp_path / "triples.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "judgment": "too short"}) + "\n")
    assert [t.negative for t in load_triples(path)] == [False, True]
    path.write_text(json.dumps(good) + "\n" + json.dumps({"instruction": "a", "judgment": None}) + "\n")
    with pytest.raises(CutFormatError, match=r"triples.jsonl: record 2 \(line 2\): output: Field required"):
        load_triples(path)


def test_bad_record_in_json_list_names_the_record(tmp_path):
    path = tmp_path / "triples.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b", "judgment": None}, {"instruction": "a", "output": "b"}]))
    with pytest.raises(CutFormatError, match=r"triples.json: record 2: judgment: Field required"):
        load_triples(path)


def test_balance_downsamples_positives_then_negatives_to_ratios():
    triples = [triple()] * 10 + [triple("bad")] * 4
    kept = balanced_indices(triples, positive_ratio=0.5, negative_ratio=None, seed=0)
    assert sum(not triples[i].negative for i in kept) == 2 and sum(triples[i].negative for i in kept) == 4
    mostly_negative = [triple("bad")] * 12 + [triple()] * 2
    kept = balanced_indices(mostly_negative, positive_ratio=1.0, negative_ratio=2.0, seed=0)
    assert sum(mostly_negative[i].negative for i in kept) == 4
    only_negative = [triple("bad")] * 5
    assert balanced_indices(only_negative, 0.25, 1.0, seed=0) == list(range(5))


def test_response_ids_are_identical_in_both_contexts(tokenizer):
    rows = build_rows([triple("Wrong: it is 42 only if you count right.")], tokenizer, CutConfig()).rows
    (row,) = rows
    assert row.negative
    assert row.aligned_ids[-row.response_len :] == row.misaligned_ids[-row.response_len :]
    assert row.response_ids[-1] == tokenizer.eos_token_id
    assert row.misaligned_ids[: -row.response_len] == prompt_ids(tokenizer, "What is six times seven?")
    assert "count right" in tokenizer.decode(row.aligned_ids[: -row.response_len])


def test_fake_positive_misalign_context_carries_the_positive_judgment(tokenizer):
    config = CutConfig(misalign_context="fake_positive")
    (row,) = build_rows([triple("Wrong.")], tokenizer, config).rows
    assert config.templates.positive_judgment in tokenizer.decode(row.misaligned_ids)


def test_objectives_choose_rows_and_contexts(tokenizer):
    triples = [triple(), triple("Wrong.")]
    sft = build_rows(triples, tokenizer, CutConfig(objective="sft")).rows
    assert [r.triple_index for r in sft] == [0] and not sft[0].negative
    hindsight = build_rows(triples, tokenizer, CutConfig(objective="hindsight")).rows
    assert [r.negative for r in hindsight] == [False, False]
    assert "Wrong." in tokenizer.decode(hindsight[1].aligned_ids)
    assert CutConfig().templates.positive_judgment in tokenizer.decode(hindsight[0].aligned_ids)


def test_long_prompt_is_cut_from_the_left_and_unfittable_response_dropped(tokenizer):
    config = CutConfig(max_length=40)
    long_prompt = triple("Wrong.", instruction="word " * 100, response="Short answer.")
    too_long_response = triple("Wrong.", response="word " * 60)
    row_set = build_rows([long_prompt, too_long_response], tokenizer, config)
    assert row_set.dropped == 1
    (row,) = row_set.rows
    assert len(row.aligned_ids) == 40 and len(row.misaligned_ids) == 40
    assert tokenizer.decode(row.response_ids[:-1]) == "Short answer."


def test_micro_batches_cover_every_row_once_grouped_by_length(tokenizer):
    triples = [triple(response="word " * n) for n in range(1, 33)]
    rows = build_rows(triples, tokenizer, CutConfig(positive_ratio=None)).rows
    batches = micro_batches(rows, size=4, window=8, rng=random.Random(0))
    assert sorted(r.triple_index for b in batches for r in b) == list(range(32))
    assert all(max(r.length for r in b) - min(r.length for r in b) <= 4 for b in batches)


def test_response_logprobs_equal_full_softmax_at_response_positions(tokenizer, tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    rows = build_rows([triple("Wrong."), triple(response="Six."), triple("No.", response="x " * 9)], tokenizer, CutConfig()).rows
    batch = collate(rows, tokenizer.eos_token_id)
    with torch.no_grad():
        logp_al, logp_mis = response_logprobs(model, batch, chunk_tokens=5)
        for b, row in enumerate(rows):
            for ids, got in [(row.aligned_ids, logp_al), (row.misaligned_ids, logp_mis)]:
                if ids is None:
                    continue
                full = F.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
                start = len(ids) - row.response_len
                expected = full[start - 1 : -1].gather(1, torch.tensor(row.response_ids).unsqueeze(1)).squeeze(1)
                torch.testing.assert_close(got[b, : row.response_len], expected, atol=1e-5, rtol=1e-5)
    assert batch.mask.sum(1).tolist() == [r.response_len for r in rows]
    assert batch.negative.tolist() == [True, False, True]


def test_forward_rows_put_the_loss_on_response_and_judgment_tokens_only(tokenizer):
    said = Triple("What is six times seven?", "", "It is 42.", None, positive_judgment="Right, and short.")
    triples = [triple("Wrong: six times seven is 42."), said, triple()]
    rows = build_rows(triples, tokenizer, CutConfig(objective="forward")).rows
    assert [(r.triple_index, r.target) for r in rows] == [(i, t) for i in range(3) for t in ("response", "judgment")]
    assert not any(r.negative for r in rows)

    batch = collate(rows, tokenizer.eos_token_id)
    flat = batch.input_ids.flatten()
    # The tokens the loss reads are exactly each row's last `response_len` ids; every id before them is context.
    predicted_at = (batch.hidden_index + 1).tolist()
    expected_at = [b * batch.input_ids.shape[1] + p for b, r in enumerate(rows)
                   for p in range(len(r.aligned_ids) - r.response_len, len(r.aligned_ids))]
    assert predicted_at == expected_at
    assert flat[batch.hidden_index + 1].tolist() == batch.labels.tolist()

    judged = {0: "Wrong: six times seven is 42.", 1: "Right, and short.", 2: CutConfig().templates.positive_judgment}
    for row in rows:
        text = triples[row.triple_index].response if row.target == "response" else judged[row.triple_index]
        assert row.response_ids == tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        context = tokenizer.decode(row.aligned_ids[: -row.response_len])
        assert triples[row.triple_index].instruction in context and judged[row.triple_index] not in context
        if row.target == "judgment":  # p(j | [x, y]): the response is context here, not a target
            assert triples[row.triple_index].response in context

    for objective in ("cut", "sft", "hindsight", "dpo", "ilf"):
        others = build_rows(triples, tokenizer, CutConfig(objective=objective)).rows
        for other in others:
            forward_row = next(r for r in rows if r.triple_index == other.triple_index and r.target == "response")
            assert other.response_ids == forward_row.response_ids, objective


def test_forward_drops_a_triple_whose_judgment_does_not_fit(tokenizer):
    config = CutConfig(objective="forward", max_length=24)
    row_set = build_rows([triple("word " * 40), triple("Wrong.")], tokenizer, config)
    assert row_set.dropped == 1 and {r.triple_index for r in row_set.rows} == {1}


def test_templates_fill_placeholders_once_and_leave_other_braces():
    from cut.rows import fill

    assert fill('{"x": 1} {instruction} / {response}', "say {judgment}", "j", "y") == '{"x": 1} say {judgment} / y'
