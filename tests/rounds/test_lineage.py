"""The live pointer: the gate rejects a worse candidate, and promote/rollback move it by hand."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cut.fingerprint import read_fingerprint
from rounds import lineage
from rounds import context, gate as gating, sample as sampling
from tiny_model import build_tiny_llama
from online_cut.cli import app
from online_cut.config import parse_config
from samplers.factory import open_sampler
from random_adapter import write_random_adapter
from storage import records
from storage.store import Store

RUN = "lineage"


@pytest.fixture
def ctx(tiny_model: Path, tmp_path: Path) -> context.RunContext:
    """A run whose round 1 trained A (promoted) and round 2 trained B from A (promoted): B is live."""
    config = parse_config(
        {
            "model": {"path": str(tiny_model)},
            "prompts": {"suite": "addition", "per_round": 2},
            "sampler": {"backend": "transformers", "n": 1, "max_tokens": 4},
            "storage": {"db": str(tmp_path / "store.duckdb"), "adapters_dir": str(tmp_path / "adapters")},
            "evaluation": {"gate": "no_worse", "margin": 0.02},
        },
        "test",
    )
    ctx = context.RunContext(config, RUN, Store.from_config(config.storage))
    ctx.store.add_run(RUN)
    parent = None
    for round, name in ((1, "A"), (2, "B")):
        context.start_round(ctx, round)
        adapter = _candidate(ctx, round, name, parent)
        gating.promote(ctx, round, adapter, {"incumbent": {"addition": 0.1}, "candidate": {"addition": 0.2}}, 1.0)
        parent = adapter
    return ctx


def _candidate(ctx: context.RunContext, round: int, name: str, parent: records.Adapter | None) -> records.Adapter:
    path = write_random_adapter(ctx.base_model, ctx.config.storage.adapters_dir / name, seed=round, rank=4)
    adapter = records.Adapter(adapter_id=name, run=RUN, round=round, path=str(path),
                              parent_id=parent.adapter_id if parent else None,
                              fingerprint=read_fingerprint(path).as_dict())
    ctx.store.add_adapter(adapter)
    return adapter


def _statuses(store: Store) -> dict[str, str]:
    return {a.adapter_id: a.status for a in store.adapters(RUN)}


def test_a_candidate_worse_than_the_margin_is_rejected_and_the_next_round_keeps_the_incumbent(ctx) -> None:
    context.start_round(ctx, 3)
    candidate = _candidate(ctx, 3, "C", ctx.adapter("B"))
    promoted = gating.promote(ctx, 3, candidate, {"incumbent": {"addition": 0.50}, "candidate": {"addition": 0.47}}, 1.0)

    assert promoted is False
    assert _statuses(ctx.store) == {"A": "retired", "B": "live", "C": "rejected"}
    state = ctx.state(3)
    assert (state.gate_decision, state.adapter_out) == ("rejected", "B")
    assert "0.470" in state.gate_reason and "0.500" in state.gate_reason
    assert context.start_round(ctx, 4).adapter_in == "B"


def test_a_hand_promote_during_a_round_leaves_one_live_adapter_after_the_gate(ctx) -> None:
    """The round opened on B; A is promoted by hand meanwhile; the gate then retires A, the adapter live now."""
    context.start_round(ctx, 3)
    lineage.promote(ctx.store, "A")
    candidate = _candidate(ctx, 3, "C", ctx.adapter("B"))
    assert gating.promote(ctx, 3, candidate, {"incumbent": {"addition": 0.5}, "candidate": {"addition": 0.6}}, 1.0)

    assert _statuses(ctx.store) == {"A": "retired", "B": "retired", "C": "live"}
    assert next(a for a in ctx.store.adapters(RUN) if a.adapter_id == "A").status_reason == "replaced by C"


def test_rollback_restores_the_parent_and_the_next_round_samples_with_it(ctx) -> None:
    restored = lineage.rollback(ctx.store, RUN)

    assert restored.adapter_id == "A"
    assert _statuses(ctx.store) == {"A": "live", "B": "retired"}
    assert context.start_round(ctx, 3).adapter_in == "A"
    with open_sampler(ctx.config.sampler, ctx.base_model) as sampler:
        assert sampling.sample(ctx, sampler, 3) == 2
    assert {r.adapter_id for r in ctx.store.responses(RUN, 3)} == {"A"}


def test_rolling_back_the_first_adapter_returns_to_the_base_model(ctx) -> None:
    lineage.rollback(ctx.store, RUN)
    assert lineage.rollback(ctx.store, RUN) is None
    assert context.start_round(ctx, 3).adapter_in is None
    with pytest.raises(lineage.LineageError, match="already samples from the base model"):
        lineage.rollback(ctx.store, RUN)


def test_promote_refuses_an_adapter_folder_that_fails_to_load_and_changes_nothing(ctx) -> None:
    (Path(ctx.adapter("A").path) / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(lineage.LineageError, match="'A' cannot be made live: .*adapter_model.safetensors"):
        lineage.promote(ctx.store, "A")
    assert _statuses(ctx.store) == {"A": "retired", "B": "live"}


def _edit_adapter_config(adapter: records.Adapter, **changes) -> None:
    config_file = Path(adapter.path) / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def test_promote_refuses_an_adapter_whose_target_modules_the_base_lacks(ctx) -> None:
    _edit_adapter_config(ctx.adapter("A"), target_modules=["attention_out"])
    with pytest.raises(lineage.LineageError, match="'A' cannot be made live: .*does not attach.*attention_out"):
        lineage.promote(ctx.store, "A")
    assert _statuses(ctx.store) == {"A": "retired", "B": "live"}


def test_promote_refuses_an_adapter_whose_weights_do_not_fit_the_base(ctx, tmp_path) -> None:
    other_base = build_tiny_llama(tmp_path / "wider", ctx.base_model, hidden_size=192)
    wider = write_random_adapter(other_base, tmp_path / "wider-adapter", seed=3, rank=4)
    shutil.copyfile(wider / "adapter_model.safetensors", Path(ctx.adapter("A").path) / "adapter_model.safetensors")
    with pytest.raises(lineage.LineageError, match=r"does not fit the base model .*: shape \[\d+, \d+\], the base needs \[\d+, \d+\]"):
        lineage.promote(ctx.store, "A")
    assert _statuses(ctx.store) == {"A": "retired", "B": "live"}


@pytest.mark.parametrize("bad", [{"r": None}, {"r": "16"}, {"target_modules": 3}])
def test_a_malformed_adapter_config_is_a_named_error(ctx, bad) -> None:
    _edit_adapter_config(ctx.adapter("A"), **bad)
    key = next(iter(bad))
    with pytest.raises(lineage.LineageError, match=f"adapter_config.json: `{key}`"):
        lineage.promote(ctx.store, "A")


def test_adapters_cli_lists_lineage_and_moves_the_pointer(ctx) -> None:
    runner = CliRunner()
    db = str(ctx.config.storage.db)
    listed = runner.invoke(app, ["adapters", "list", "--db", db, "--format", "csv"])
    assert listed.exit_code == 0, listed.output
    rows = [line.split(",")[:5] for line in listed.output.splitlines()[1:]]
    assert rows == [[RUN, "1", "A", "(base)", "retired"], [RUN, "2", "B", "A", "live"]]

    assert runner.invoke(app, ["adapters", "promote", "A", "--db", db]).exit_code == 0
    assert _statuses(ctx.store) == {"A": "live", "B": "retired"}

    unknown = runner.invoke(app, ["adapters", "promote", "Z", "--db", db])
    assert unknown.exit_code == 1 and "no adapter 'Z'" in unknown.output
    assert _statuses(ctx.store) == {"A": "live", "B": "retired"}


def test_adapters_verify_checks_the_served_weights_against_the_stored_fingerprint(ctx, tmp_path) -> None:
    runner = CliRunner()
    config = tmp_path / "sampler.yaml"
    config.write_text(json.dumps({"model": {"path": str(ctx.base_model)}, "sampler": {"backend": "transformers"}}))
    verify = ["adapters", "verify", RUN, "--config", str(config), "--db", str(ctx.config.storage.db)]
    served = runner.invoke(app, verify)
    assert served.exit_code == 0, served.output
    assert re.search(r"B: transformers \(float32\) serves it \(match\): mean \|Δ log p\| 0 from the trainer's over "
                     r"\d+ probe tokens, \S+ from its parent's, at 1\.00 of the way from the parent's to the adapter's "
                     r"\(\S+ noise units apart\); engine noise \S+ \(measured\)", served.output)

    # B's folder swapped by hand for A's weights, with A's own fingerprint: the store's copy of B's tells.
    swapped = Path(ctx.adapter("B").path)
    shutil.rmtree(swapped)
    shutil.copytree(ctx.adapter("A").path, swapped)
    mismatched = runner.invoke(app, verify)
    assert mismatched.exit_code == 1
    assert "adapter 'B': backend transformers scores" in " ".join(mismatched.output.split())
