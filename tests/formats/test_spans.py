"""Locating a judge's quotes in the response it judged (issue 38's hand-written replies)."""

from __future__ import annotations

import pytest

from formats.spans import MAX_SPANS, Span, SpanQuote, locate
from judges.prompt import MalformedReply, parse_reply


def located(response: str, **quote) -> Span:
    (span,) = locate(response, [SpanQuote(**quote)])
    return span


def test_an_exact_quote_gets_its_offsets_and_text() -> None:
    response = "12 + 30 = 42, 7 + 1 = 9"
    span = located(response, quote="= 9", severity="major")
    assert (span.start, span.end, span.text, span.severity) == (20, 23, "= 9", "major")
    assert response[span.start:span.end] == "= 9"


def test_a_quote_with_changed_whitespace_is_found_and_mapped_back_to_the_responses_characters() -> None:
    response = "The  capital of\nFrance is\tBerlin."
    span = located(response, quote="France is Berlin")
    assert response[span.start:span.end] == "France is\tBerlin"


def test_a_repeated_quote_is_placed_by_its_context_or_its_occurrence() -> None:
    response = "8, 10, 16, 10"  # the second 10 is wrong
    assert located(response, quote="10", context="16, 10").start == 11
    assert located(response, quote="10", occurrence=2).start == 11
    assert located(response, quote="10").start == 3  # neither: the first
    assert located(response, quote="10", context="not in the response").start == 3


def test_a_quote_not_in_the_response_is_kept_unlocated() -> None:
    span = located("The answer is 85.", quote="the answer is 58", severity="critical")
    assert not span.located and (span.start, span.end, span.text) == (None, None, None)
    assert (span.quote, span.severity) == ("the answer is 58", "critical")
    assert not located("8, 10", quote="10", occurrence=2).located


def test_a_quote_over_multi_byte_text_counts_characters_not_bytes() -> None:
    response = "Größe: 5 €, Ünïcödé ＡＢＣ wrong"
    span = located(response, quote="Ünïcödé")
    assert response[span.start:span.end] == "Ünïcödé" and span.start == 12
    # Full-width letters are matched after NFKC and mapped back to the characters as written.
    wide = located(response, quote="ABC wrong")
    assert response[wide.start:wide.end] == "ＡＢＣ wrong"


def test_leading_and_trailing_whitespace_of_a_quote_does_not_stop_its_location() -> None:
    response = "  Paris is in Germany."
    span = located(response, quote=" Paris is in Germany. ")
    assert response[span.start:span.end] == "Paris is in Germany."


def test_more_quotes_than_allowed_make_the_reply_malformed() -> None:
    quotes = ", ".join('{"quote": "x", "context": "", "severity": "minor"}' for _ in range(MAX_SPANS + 1))
    with pytest.raises(MalformedReply, match="spans"):
        parse_reply(f'{{"judgment": "bad", "verdict": "negative", "score": 2, "spans": [{quotes}]}}', "stop")


def test_a_reply_with_quotes_becomes_a_judgment_with_located_and_unlocated_spans() -> None:
    reply = parse_reply('{"judgment": "Two sums are wrong.", "verdict": "negative", "score": 3, "spans": ['
                        '{"quote": "9", "context": "7 + 1 = 9", "severity": "major"},'
                        '{"quote": "17", "context": "", "severity": "minor"}]}', "stop")
    fields = reply.judgment_fields("12 + 30 = 42, 7 + 1 = 9")
    first, second = fields["spans"]
    assert (first.start, first.end, first.severity) == (22, 23, "major")
    assert not second.located and second.quote == "17"


def test_a_triple_file_whose_span_is_not_in_its_output_is_refused_naming_the_record(tmp_path) -> None:
    from formats.triple_file import CutFormatError, read_cut_records

    path = tmp_path / "triples.jsonl"
    path.write_text('{"instruction": "1 + 1?", "output": "3", "judgment": "Wrong.", '
                    '"spans": [{"quote": "3", "start": 0, "end": 1, "text": "3"}]}\n'
                    '{"instruction": "2 + 2?", "output": "5", "judgment": "Wrong.", '
                    '"spans": [{"quote": "5", "start": 0, "end": 1, "text": "4"}]}\n')
    with pytest.raises(CutFormatError, match=r"record 2 \(line 2\): .*spans.0: output\[0:1\] is not its text '4'"):
        read_cut_records(path)
