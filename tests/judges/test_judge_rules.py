"""Rule critics judge checkable tasks and say in words what is wrong or right."""

from __future__ import annotations

import pytest

from judges.judgment import JudgeItem
from judges.rules import AdditionCritic, FormatCritic, SumsCritic


@pytest.mark.parametrize(
    ("response", "verdict", "text"),
    [
        ('75', "negative", 'The response "75" is incorrect: 47 + 38 = 85, not 75.'),
        ("The answer is 85.", "positive", "The response is correct: 47 + 38 = 85."),
        ("47 + 38 = 85", "positive", "The response is correct: 47 + 38 = 85."),
        ("I am not sure.", "negative", 'The response "I am not sure." gives no number; 47 + 38 = 85.'),
    ],
)
def test_addition_critic_writes_what_is_wrong_or_right(response: str, verdict: str, text: str) -> None:
    [judgment] = AdditionCritic().judge_many_sync([JudgeItem(instruction="What is 47 + 38?", response=response)])
    assert (judgment.status, judgment.verdict, judgment.judgment) == ("ok", verdict, text)


@pytest.mark.parametrize(
    ("response", "verdict", "text"),
    [
        ("47 + 38 is a classic arithmetic operation with", "negative",
         'The response "47 + 38 is a classic arithmetic operation with" gives no number; 47 + 38 = 85.'),
        ("To add 47 and 38, line up the tens and the ones.", "negative",
         'The response "To add 47 and 38, line up the tens and the ones." gives no number; 47 + 38 = 85.'),
        ("The sum of 47 and 38", "negative", 'The response "The sum of 47 and 38" gives no number; 47 + 38 = 85.'),
        ("The sum of 47 and 38 is 85.", "positive", "The response is correct: 47 + 38 = 85."),
    ],
)
def test_addition_critic_never_takes_an_echoed_operand_for_the_answer(response: str, verdict: str, text: str) -> None:
    assert judged(response) == (verdict, text)


@pytest.mark.parametrize(
    ("response", "verdict", "text"),
    [
        ("40 + 30 = 70 and 7 + 8 = 15, so 47 + 38 = 85.", "positive", "The response is correct: 47 + 38 = 85."),
        ("47 + 38 = 47 + 30 + 8 = 85", "positive", "The response is correct: 47 + 38 = 85."),
        ("40 + 30 = 70, 7 + 8 = 15, so the answer is 84.", "negative",
         'The response "40 + 30 = 70, 7 + 8 = 15, so the answer is 84." is incorrect: 47 + 38 = 85, not 84.'),
        ("Adding 40 and 30 gives 70, plus 15 makes 86", "negative",
         'The response "Adding 40 and 30 gives 70, plus 15 makes 86" is incorrect: 47 + 38 = 85, not 86.'),
    ],
)
def test_addition_critic_reads_the_stated_answer_among_several_numbers(response: str, verdict: str, text: str) -> None:
    assert judged(response) == (verdict, text)


@pytest.mark.parametrize(
    ("response", "verdict", "text"),
    [
        ("The answer is eighty-five.", "positive", "The response is correct: 47 + 38 = 85."),
        ("Forty-seven plus thirty-eight is Eighty five", "positive", "The response is correct: 47 + 38 = 85."),
        ("It is eighty-four.", "negative", 'The response "It is eighty-four." is incorrect: 47 + 38 = 85, not 84.'),
    ],
)
def test_addition_critic_reads_an_answer_written_in_words(response: str, verdict: str, text: str) -> None:
    assert judged(response) == (verdict, text)


def judged(response: str) -> tuple[str, str]:
    """The addition critic's verdict and words on a response to "What is 47 + 38?"."""
    [judgment] = AdditionCritic().judge_many_sync([JudgeItem(instruction="What is 47 + 38?", response=response)])
    return judgment.verdict, judgment.judgment


def test_addition_critic_quotes_a_long_response_shortened_to_one_line() -> None:
    response = "Let me think.\n" + "So many words here. " * 10
    [judgment] = AdditionCritic().judge_many_sync([JudgeItem(instruction="What is 47 + 38?", response=response)])
    quote = judgment.judgment.split('"')[1]
    assert quote.startswith("Let me think. So many") and quote.endswith("…") and len(quote) == 120


def test_addition_critic_prefers_metadata_operands_over_the_wording() -> None:
    item = JudgeItem(instruction="Add the two numbers.", response="61", metadata={"a": 23, "b": 38})
    [judgment] = AdditionCritic().judge_many_sync([item])
    assert judgment.judgment == "The response is correct: 23 + 38 = 61."


def test_addition_critic_fails_with_a_reason_when_there_is_no_sum() -> None:
    [judgment] = AdditionCritic().judge_many_sync([JudgeItem(instruction="Write a poem.", response="85")])
    assert judgment.status == "failed" and "no addition problem" in judgment.error


def test_format_critic_names_the_broken_constraints_and_the_kept_ones() -> None:
    item = JudgeItem(instruction="Describe Paris in at most 5 words, in lower case.", response="Paris is the capital of France")
    [judgment] = FormatCritic().judge_many_sync([item])
    assert judgment.verdict == "negative"
    assert "6 words, more than the limit of 5" in judgment.judgment
    assert "'Paris', 'France' have capital letters" in judgment.judgment


def test_format_critic_accepts_a_response_within_the_constraints() -> None:
    item = JudgeItem(instruction="Answer briefly.", response="paris is lovely", metadata={"max_words": 3, "case": "lower"})
    [judgment] = FormatCritic().judge_many_sync([item])
    assert judgment.verdict == "positive"
    assert judgment.judgment == "The response follows the format: it keeps to the limit of 3 words (3) and it is all lower case."


def _blamed(judgment) -> list[str]:
    return [span.text for span in judgment.spans]


def test_each_rule_critic_locates_exactly_what_it_blames() -> None:
    """Issue 38: spans a rule critic gives are exact: the trainer flags their tokens."""
    addition = AdditionCritic().judge_one(JudgeItem(instruction="What is 47 + 38?", response="47 + 38 = 75. Done."))
    assert _blamed(addition) == ["75"] and addition.spans[0].start == 10
    right = AdditionCritic().judge_one(JudgeItem(instruction="What is 47 + 38?", response="85"))
    assert right.verdict == "positive" and right.spans == ()

    sums = SumsCritic().judge_one(JudgeItem(instruction="Add each pair: 7 + 1, 9 + 1, 9 + 7.",
                                            response="7 + 1 = 8, 9 + 1 = 11,  16 , 4"))
    assert _blamed(sums) == ["11", "4"]
    assert [s.severity for s in sums.spans] == ["major", "minor"]  # a wrong sum; a part beyond the pairs
    none_stated = SumsCritic().judge_one(JudgeItem(instruction="Add each pair: 7 + 1, 9 + 1.", response="8, many"))
    assert _blamed(none_stated) == ["many"]

    fmt = FormatCritic().judge_one(JudgeItem(instruction="Answer in lower case, with no commas, in at most 3 words.",
                                             response="the Sea, is deep blue"))
    assert _blamed(fmt) == ["Sea,", ",", "deep blue"]
