"""Arms: named `cut` settings compared like objectives, checked before anything starts, and the dev
split they are tuned on, apart from the held-out split."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from online_cut.cli import app
from online_cut.config import ConfigError, parse_config
from rounds.experiment import arm_config, arm_options
from rounds.results import ArmResult, write_results
from rounds.context import RunContext
from rounds.evaluate import held_out_sets
from judges.judgment import JudgeItem
from samplers.prompts import PromptSourceError, suite_prompts
from storage.store import Store


def test_an_arm_sets_cut_keys_over_the_config_and_a_bad_one_is_named() -> None:
    config = parse_config({"cut": {"lam": 1.5, "alpha": 0.5}}, "test")
    arm = arm_config(config, "lam-low", {"objective": "cut", "lam": 1.1})
    assert (arm.cut.lam, arm.cut.alpha, arm.cut.objective) == (1.1, 0.5, "cut")
    assert config.cut.lam == 1.5  # the base config is left as it was
    with pytest.raises(ConfigError, match=r"arm 'low': invalid config\n  cut.lam: .*greater than or equal to 1"):
        arm_config(config, "low", {"lam": 0.5})
    with pytest.raises(ConfigError, match=r"cut.no_such_key: unknown key"):
        arm_config(config, "typo", {"no_such_key": 1})


def test_arm_options_give_the_same_arms_again() -> None:
    assert arm_options({"cut": {"objective": "cut"}, "sft": {"objective": "sft"}}) == ["--objective=cut", "--objective=sft"]
    [option] = arm_options({"lam-low": {"objective": "cut", "lam": 1.1}})
    name, _, settings = option.removeprefix("--arm=").partition("=")
    assert name == "lam-low" and yaml.safe_load(settings) == {"objective": "cut", "lam": 1.1}


@pytest.mark.parametrize(("arms", "message"), [
    (["lam-bad={lam: 0.5}"], "arm 'lam-bad': invalid config"),
    (["a={lam: [1.1"], "SETTINGS is not YAML"),
    (["a=1.1"], "expected NAME=SETTINGS"),
    (["a b={lam: 1.1}"], "letters, digits"),
    (["../up={lam: 1.1}"], "letters, digits"),
    (["a={lam: 1.1}", "a={lam: 1.2}"], "'a' is given twice"),
])
def test_a_bad_arm_fails_before_anything_starts(arms: list[str], message: str, tmp_path: Path) -> None:
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({"storage": {"db": str(tmp_path / "store.duckdb")}}))
    options = [option for arm in arms for option in ("--arm", arm)]
    result = CliRunner().invoke(app, ["experiment", "--config", str(config), *options])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "store.duckdb").exists()


def test_the_dev_split_is_training_prompts_apart_from_the_held_out_ones(tmp_path: Path) -> None:
    def sets(split: str):
        config = parse_config({"evaluation": {"suites": ["sums", "addition"], "n": 50, "split": split}}, "test")
        return held_out_sets(RunContext(config, "t", Store(tmp_path / "store.duckdb")), judge=None)

    dev, held_out = sets("dev"), sets("heldout")
    assert [s.name for s in dev] == ["sums:dev", "addition:dev"] and [s.name for s in held_out] == ["sums", "addition"]
    for dev_set, held_out_set, suite in zip(dev, held_out, ("sums", "addition")):
        dev_texts = {p.instruction for p in dev_set.prompts}
        assert len(dev_texts) == 50 and not dev_texts & {p.instruction for p in held_out_set.prompts}
        assert dev_texts <= {p.instruction for p in suite_prompts(suite, "train", 50, seed="dev")}
        assert dev_set.judge.judge_id == held_out_set.judge.judge_id  # the same rule critic scores both


def test_results_list_each_arms_settings(tmp_path: Path) -> None:
    arms = {"lam-low": {"objective": "cut", "lam": 1.1}, "lam-high": {"objective": "cut", "lam": 2.0}}
    results = [ArmResult(arm, settings["objective"], [f"t-{arm}"], [[0.25, 0.5]], [[3]], 60.0)
               for arm, settings in arms.items()]
    path = tmp_path / "results.md"
    write_results(path, {"sums:dev": results}, command="online-cut experiment", config_text="rounds: 1\n",
                  wall_s=60.0, seed=42, n=4, arms=arms)
    text = path.read_text()
    assert '- `lam-high`: {"objective": "cut", "lam": 2.0}' in text
    assert "| lam-low | 25.0% ± 21.7 | 50.0% ± 25.0 |" in text


def test_a_transfer_suite_shares_no_wording_or_part_count_with_its_suite_and_is_never_a_dev_set(tmp_path: Path) -> None:
    config = parse_config({"evaluation": {"suites": ["sums", "sums-transfer", "addition-transfer"], "n": 150}}, "test")
    held_out = held_out_sets(RunContext(config, "t", Store(tmp_path / "store.duckdb")), judge=None)
    assert [s.name for s in held_out] == ["sums", "sums-transfer", "addition-transfer"]
    sums, sums_transfer, addition_transfer = (s.prompts for s in held_out)
    trained_prefixes = {p.instruction.split(":")[0] for p in suite_prompts("sums", "train", 2000, seed="x")}
    assert {p.instruction.split(":")[0] for p in sums_transfer}.isdisjoint(trained_prefixes)
    assert {len(p.metadata["pairs"]) for p in sums_transfer} == {2, 4}
    assert {len(p.metadata["pairs"]) for p in sums} == {3}
    addition_texts = {p.instruction for p in suite_prompts("addition", "train", 5000)}
    assert not {p.instruction for p in addition_transfer} & addition_texts
    # Scored by the rule critic of their skill: the right answer to a 4-part prompt is judged right.
    prompt = next(p for p in sums_transfer if len(p.metadata["pairs"]) == 4)
    critic = held_out[1].judge
    answer = ", ".join(str(a) for a in prompt.metadata["answers"])
    assert critic.judge_one(JudgeItem(instruction=prompt.instruction, response=answer, metadata=prompt.metadata)).verdict == "positive"

    dev = held_out_sets(RunContext(config.model_copy(update={"evaluation": config.evaluation.model_copy(
        update={"split": "dev"})}), "t", Store(tmp_path / "store.duckdb")), judge=None)
    assert [s.name for s in dev] == ["sums:dev"]
    with pytest.raises(PromptSourceError, match="held out whole"):
        suite_prompts("sums-transfer", "train", 10)


def test_an_arm_gets_round_one_with_the_judgments_spans(tmp_path: Path) -> None:
    """Issue 38: the arms' round 1 came without the judges' spans, so a span-guided arm trained its first round
    on contrast flags."""
    from formats.spans import exact
    from rounds.experiment import share_first_round
    from storage.records import Judgment, Prompt, Response

    store = Store(tmp_path / "store.duckdb")
    prompt = Prompt(instruction="Add each pair: 7 + 1, 9 + 1.")
    response = Response(run="e-shared", round=1, prompt_id=prompt.prompt_id, text="8, 11")
    with store.transaction() as tx:
        tx.start_round("e-shared", 1)
        tx.add_prompts([prompt])
        tx.add_responses([response])
        tx.add_judgments([Judgment(response_id=response.response_id, judge="rule:sums", verdict="negative",
                                   judgment="9 + 1 = 10", spans=[exact("8, 11", 3, 5, "major")])])
        tx.record_round_step("e-shared", 1, "sample", 1.0)
        tx.record_round_step("e-shared", 1, "judge", 1.0)
    share_first_round(store, "e-shared", "e-spans")
    [triple] = store.triples("e-spans")
    assert [(s.start, s.end, s.text, s.severity) for s in triple.spans] == [(3, 5, "11", "major")]
