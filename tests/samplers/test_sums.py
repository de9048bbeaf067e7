"""The multi-part suite `sums` and its critic: partly right answers, each wrong part named."""

from __future__ import annotations

import pytest

from judges.judgment import JudgeItem
from judges.rules import SumsCritic
from samplers.prompts import SUMS_PARTS, suite_prompts

PAIRS = [[7, 1], [9, 1], [9, 7]]


def judge(response: str, pairs=PAIRS):
    return SumsCritic().judge_one(JudgeItem(instruction="Add each pair.", response=response, metadata={"pairs": pairs}))


def test_the_suite_has_disjoint_splits_of_three_one_digit_pairs_with_their_answers():
    train = suite_prompts("sums", "train", 300, seed=1)
    heldout = suite_prompts("sums", "heldout", 200)
    assert not {p.instruction for p in train} & {p.instruction for p in heldout}
    for prompt in train + heldout:
        pairs = prompt.metadata["pairs"]
        assert len(pairs) == SUMS_PARTS and all(1 <= n <= 9 for pair in pairs for n in pair)
        assert prompt.metadata["answers"] == [a + b for a, b in pairs]
        assert prompt.instruction.endswith(", ".join(f"{a} + {b}" for a, b in pairs) + ".")


@pytest.mark.parametrize(
    "response, verdict, score, named, not_named",
    [
        ("8, 10, 16", "positive", 1.0, [], []),
        ("7 + 1 = 8, 9 + 1 = 10, 9 + 7 = 16.", "positive", 1.0, [], []),
        ("8, 9, 16", "negative", 2 / 3, ['"9" is wrong: 9 + 1 = 10'], ["7 + 1", "9 + 7", '"8"', '"16"']),
        ("7 + 1 = 9, 9 + 1 = 11, 9 + 7 = 15", "negative", 0.0,
         ['"7 + 1 = 9" is wrong: 7 + 1 = 8', '"9 + 1 = 11" is wrong: 9 + 1 = 10', '"9 + 7 = 15" is wrong: 9 + 7 = 16'], []),
        ("8, 10", "negative", 2 / 3, ["there is no sum for 9 + 7 (9 + 7 = 16)"], ['"8"', '"10"']),
        ("8, 10, 16, 3", "negative", 3 / 4, ["it gives 4 parts for 3 pairs"], ['"8"', '"10"', '"16"']),
        ("I like turtles", "negative", 0.0, ['"I like turtles" gives no number for 7 + 1 (7 + 1 = 8)',
                                             "there is no sum for 9 + 1", "there is no sum for 9 + 7"], []),
        ("7 + 1, 9 + 1 = 10, 9 + 7", "negative", 1 / 3,
         ['"7 + 1" gives no number for 7 + 1', '"9 + 7" gives no number for 9 + 7'], ['"9 + 1 = 10"']),
    ],
)
def test_the_critic_names_exactly_the_wrong_parts(response, verdict, score, named, not_named):
    judgment = judge(response)
    assert judgment.verdict == verdict
    assert judgment.score == pytest.approx(score)
    for text in named:
        assert text in judgment.judgment
    for text in not_named:
        assert text not in judgment.judgment


def test_without_metadata_the_pairs_are_read_from_the_instruction():
    item = JudgeItem(instruction="Add each pair and reply with the sums separated by commas: 2 + 3, 4 + 4.",
                     response="5, 9")
    judgment = SumsCritic().judge_one(item)
    assert judgment.verdict == "negative" and '"9" is wrong: 4 + 4 = 8' in judgment.judgment


@pytest.mark.parametrize("suite", ["addition", "format", "sums"])
def test_every_suite_prompt_is_judged_by_its_critic(suite):
    from rounds.evaluate import suite_critic
    from samplers.prompts import _SUITE_ITEMS

    critic = suite_critic(suite)
    items = [JudgeItem(instruction=p.instruction, response="An answer, of sorts.", metadata=p.metadata)
             for p in _SUITE_ITEMS[suite]()]
    assert [j.error for j in critic.judge_many_sync(items) if j.status != "ok"] == []


def test_the_no_commas_constraint_is_checked():
    from judges.rules import FormatCritic

    prompt = "Describe tea. Do not use any commas in your answer."
    critic = FormatCritic()
    assert critic.judge_one(JudgeItem(instruction=prompt, response="Tea is a drink")).verdict == "positive"
    blamed = critic.judge_one(JudgeItem(instruction=prompt, response="Tea is hot, green, calm", metadata={"no_commas": True}))
    assert blamed.verdict == "negative" and "it uses 2 commas" in blamed.judgment
