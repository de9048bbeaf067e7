"""Span-guided CUT (`cut.detection`): spans → the tokens the training rows flag, and the loss on them."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from cut.config import CutConfig
from cut.data import Triple
from cut.objective import cut_loss
from cut.rows import build_rows
from cut.batches import collate
from cut.trainer import detected, train
from formats.spans import SpanQuote, exact, locate


@pytest.fixture(scope="module")
def tokenizer(shipped_model):
    return AutoTokenizer.from_pretrained(shipped_model)


def negative_row(tokenizer, response: str, spans, **config):
    triple = Triple("Add each pair.", "", response, "Some parts are wrong.", spans=tuple(spans))
    (row,) = build_rows([triple], tokenizer, CutConfig(**config)).rows
    return row


def blamed_text(tokenizer, row) -> list[str]:
    return [tokenizer.decode([row.response_ids[t]]) for t in row.blamed]


def test_a_span_flags_exactly_the_tokens_that_overlap_its_characters(tokenizer) -> None:
    response = "7 + 1 = 8, 9 + 1 = 11, 9 + 7 = 16"
    row = negative_row(tokenizer, response, [exact(response, 19, 21)])
    assert "".join(blamed_text(tokenizer, row)).strip() == "11"
    # The ids are the very ones the row trains on: the response tokenized on its own, then EOS.
    assert row.response_ids == tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_a_repeated_quote_flags_the_occurrence_its_context_names(tokenizer) -> None:
    response = "8, 10, 16, 10"
    (span,) = locate(response, [SpanQuote(quote="10", context="16, 10")])
    row = negative_row(tokenizer, response, [span])
    ids = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    starts = [ids["offset_mapping"][t][0] for t in row.blamed]
    assert all(start >= 10 for start in starts) and blamed_text(tokenizer, row)


def test_multi_byte_characters_and_leading_whitespace_map_by_characters(tokenizer) -> None:
    response = "  Größe: 5 € — falsch"
    start = response.index("€")
    row = negative_row(tokenizer, response, [exact(response, start, start + 1)])
    assert "€" in tokenizer.decode([row.response_ids[t] for t in row.blamed])
    leading = negative_row(tokenizer, response, [exact(response, 2, 7)])
    assert tokenizer.decode([leading.response_ids[t] for t in leading.blamed]).strip().startswith("Gr")


def test_a_quote_that_straddles_token_boundaries_flags_every_token_it_touches(tokenizer) -> None:
    response = "The sum is seventeen hundred."
    start = response.index("venteen hun")
    row = negative_row(tokenizer, response, [exact(response, start, start + len("venteen hun"))])
    text = tokenizer.decode([row.response_ids[t] for t in row.blamed])
    assert "seventeen" in text and "hundred" in text and "sum" not in text


def test_a_judgment_with_no_located_span_leaves_the_row_to_contrast_detection(tokenizer) -> None:
    (unlocated,) = locate("8, 11", [SpanQuote(quote="12")])
    assert negative_row(tokenizer, "8, 11", [unlocated]).blamed is None
    assert negative_row(tokenizer, "8, 11", []).blamed is None


def test_a_truncated_response_gets_no_end_of_sequence_token_and_can_be_left_out(tokenizer) -> None:
    cut_off = Triple("Count to ten.", "", "1, 2, 3, 4", None, truncated=True)
    whole = Triple("Count to three.", "", "1, 2, 3", None)
    rows = build_rows([cut_off, whole], tokenizer, CutConfig(objective="sft")).rows
    assert rows[0].response_ids[-1] != tokenizer.eos_token_id and rows[1].response_ids[-1] == tokenizer.eos_token_id
    assert [r.triple_index for r in build_rows([cut_off, whole], tokenizer, CutConfig(objective="sft",
                                                                                      truncated="drop")).rows] == [1]


def test_span_detection_gives_the_hand_computed_loss() -> None:
    """Two rows of three tokens: an Align-P row, and an Align-N row whose span covers token 1 while
    the contrast would flag token 0 only."""
    p_aligned = torch.tensor([[0.5, 0.4, 0.9], [0.6, 0.2, 0.3]])
    p_mis = torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.5, 0.25]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    negative = torch.tensor([False, True])
    blamed = torch.tensor([[False, False, False], [False, True, False]])
    contrast = mask & negative.unsqueeze(1) & (p_aligned > 1.1 * p_mis)
    assert contrast.tolist() == [[False] * 3, [True, False, True]]

    class Rows:  # the two fields `detected` reads off a batch
        pass

    batch = Rows()
    batch.blamed, batch.has_spans = blamed, torch.tensor([False, True])
    flags = detected("spans", contrast, batch)
    out = cut_loss(p_aligned.log(), p_mis.log(), mask, negative, lam=1.1, alpha=0.5, flagged=flags)

    l2 = -sum(math.log(p) for p in [0.5, 0.4, 0.9, 0.6, 0.2, 0.3]) / 6
    l1 = (-math.log(0.3) - 0.5 * math.log(1 - 0.5) - math.log(0.25)) / 3
    assert out.flagged.tolist() == [[False] * 3, [False, True, False]]
    assert out.l2.item() == pytest.approx(l2) and out.l1.item() == pytest.approx(l1)
    assert out.loss.item() == pytest.approx(l1 + l2)

    union = cut_loss(p_aligned.log(), p_mis.log(), mask, negative, lam=1.1, alpha=0.5,
                     flagged=detected("union", contrast, batch), unflagged_mle=False)
    assert union.flagged.tolist() == [[False] * 3, [True, True, True]]
    assert union.l1.item() == pytest.approx(-0.5 * (math.log(0.7) + math.log(0.5) + math.log(0.75)) / 3)

    weighted = cut_loss(p_aligned.log(), p_mis.log(), mask, negative, lam=1.1, alpha=0.5, flagged=flags,
                        flag_weights=torch.tensor([[1.0, 1.0, 1.0], [1.0, 3.0, 1.0]]))
    assert weighted.l1.item() == pytest.approx((-math.log(0.3) - 3 * 0.5 * math.log(1 - 0.5) - math.log(0.25)) / 3)


def test_a_blamed_token_weighs_by_the_most_severe_span_over_it(tokenizer) -> None:
    response = "Paris, Rome, Bonn, Oslo"
    spans = (exact(response, 7, 11, "major"), exact(response, 7, 17, "minor"), exact(response, 19, 23))
    config = CutConfig(severity_weights={"minor": 0.25, "major": 2.0, "critical": 4.0})
    (row,) = build_rows([Triple("Name four capitals of Europe.", "", response, "Rome and Bonn are wrong.", spans=spans)],
                        tokenizer, config).rows
    weight_of = {tokenizer.decode([row.response_ids[t]]).strip(): w for t, w in zip(row.blamed, row.blame_weights)}
    assert weight_of["Rome"] == 2.0  # under a major and a minor span: the major one's weight
    assert weight_of["Bonn"] == 0.25 and weight_of["Oslo"] == 1.0  # a minor span; a span with no severity
    assert "Paris" not in weight_of
    batch = collate([row], tokenizer.pad_token_id)
    assert sorted(batch.blame_weights[0, list(row.blamed)].tolist()) == sorted(row.blame_weights)
    assert batch.blame_weights.sum().item() == pytest.approx(sum(row.blame_weights) + batch.mask.sum().item() - len(row.blamed))


def test_training_reports_how_well_the_contrast_finds_the_span_tokens(tiny_model, tokenizer, tmp_path) -> None:
    response = "7 + 1 = 8, 9 + 1 = 11"
    triples = [Triple("Add each pair: 7 + 1, 9 + 1.", "", response, "9 + 1 = 10, not 11.",
                      spans=(exact(response, 19, 21),)),
               Triple("Add each pair: 2 + 2.", "", "4", None)]
    result = train(CutConfig(detection="spans", positive_ratio=None, micro_batch_size=2), str(tiny_model), triples,
                   tmp_path / "adapter", progress=False)
    found = result.detection
    (row,) = [r for r in build_rows(triples, tokenizer, CutConfig()).rows if r.negative]
    assert (found.rows, found.span_tokens) == (1, len(row.blamed))
    assert [t.index for t in result.flagged[0]] == list(row.blamed)  # the loss flagged the span's tokens
    assert 0 <= found.flagged_in_spans <= min(found.span_tokens, found.contrast_flagged)
    if found.contrast_flagged:
        assert found.precision == found.flagged_in_spans / found.contrast_flagged
