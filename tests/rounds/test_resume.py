"""A run started again checks, before any step, that its store still fits the config and the disk:
a changed config, a deleted or broken adapter folder and a locked store each stop it with an error
that says what to do, and the store is left as it was."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cut.fingerprint import read_fingerprint
from online_cut.config import parse_config
from random_adapter import write_random_adapter
from rounds.resume import ResumeError, open_run
from storage import records
from storage.connection import StoreLocked
from storage.store import Store

REPO = Path(__file__).resolve().parents[2]
RUN = "resumed"


def _settings(tmp_path: Path, tiny_model: Path, **cut) -> dict:
    return {
        "model": {"path": str(tiny_model)},
        "prompts": {"suite": "addition", "per_round": 2},
        "sampler": {"backend": "transformers", "n": 1, "max_tokens": 4},
        "cut": {"lam": 1.0, **cut},
        "storage": {"db": str(tmp_path / "store.duckdb"), "adapters_dir": str(tmp_path / "adapters")},
    }


@pytest.fixture
def started(tmp_path: Path, tiny_model: Path):
    """A run opened once, with a live adapter A of round 1."""
    config = parse_config(_settings(tmp_path, tiny_model), "test")
    ctx = open_run(config, RUN, Store.from_config(config.storage))
    path = write_random_adapter(ctx.base_model, tmp_path / "adapters" / "A", seed=1, rank=4)
    ctx.store.start_round(RUN, 1)
    ctx.store.add_adapter(records.Adapter(adapter_id="A", run=RUN, round=1, path=str(path),
                                          fingerprint=read_fingerprint(path).as_dict()))
    ctx.store.set_adapter_status("A", "live", "test")
    return config, ctx.store, path


def _snapshot(store: Store) -> list[dict]:
    return store.query("SELECT (SELECT count(*) FROM runs) AS runs, (SELECT max(config::VARCHAR) FROM runs) AS config, "
                       "(SELECT count(*) FROM rounds) AS rounds, (SELECT string_agg(adapter_id || status, ',') "
                       "FROM adapters) AS adapters")


def test_the_same_config_resumes_and_more_rounds_may_be_asked_for(started) -> None:
    config, store, _ = started
    before = _snapshot(store)
    assert open_run(config.model_copy(update={"rounds": config.rounds + 2}), RUN, store).run == RUN
    assert _snapshot(store) == before


def test_a_changed_config_is_refused_naming_the_setting_and_the_store_is_unchanged(started, tmp_path, tiny_model) -> None:
    config, store, _ = started
    before = _snapshot(store)
    changed = parse_config(_settings(tmp_path, tiny_model, lam=1.5), "test")
    with pytest.raises(ResumeError, match=r"run 'resumed' was started with another config \(cut\.lam: 1\.0 → 1\.5\): "
                                          r"continue it with the config it was started with .* or start a new run"):
        open_run(changed, RUN, store)
    assert _snapshot(store) == before


@pytest.mark.parametrize("damage, problem", [
    (lambda path: shutil.rmtree(path), "is gone"),
    (lambda path: (path / "adapter_model.safetensors").write_bytes(b"half a file"), "cannot be loaded"),
    (lambda path: (path / "fingerprint.json").write_text('{"probes": []}'), "holds another adapter"),
])
def test_a_live_adapter_folder_damaged_between_attempts_is_named_with_what_to_do(started, damage, problem) -> None:
    config, store, path = started
    before = _snapshot(store)
    damage(path)
    with pytest.raises(ResumeError, match=rf"run 'resumed': live adapter 'A' at {path} {problem}.*: restore the folder, "
                                          r"or make its parent live with `online-cut adapters rollback resumed`"):
        open_run(config, RUN, store)
    assert _snapshot(store) == before


def test_online_cut_run_refuses_a_changed_config_before_prefect_starts(started, tmp_path, tiny_model) -> None:
    config, store, _ = started
    before = _snapshot(store)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(_settings(tmp_path, tiny_model, lam=1.5)))
    done = subprocess.run([sys.executable, "-m", "online_cut.cli", "run", "--config", str(changed), "--run", RUN],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "started with another config (cut.lam: 1.0 → 1.5)" in done.stderr and "Traceback" not in done.stderr
    assert "prefect" not in done.stderr.lower()  # refused before a Prefect server or an engine started
    assert _snapshot(store) == before


def test_a_store_locked_by_another_writer_is_named_and_left_as_it_was(started) -> None:
    config, store, _ = started
    before = _snapshot(store)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, duckdb; db = duckdb.connect(sys.argv[1]); print('holding', flush=True); "
         "sys.stdin.read()", str(store.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreLocked, match=rf"{store.path} is locked by another process: .*PID {holder.pid}.* "
                                              "wait for it to finish or stop it, then retry"):
            open_run(config, RUN, Store(store.path, lock_timeout_s=1))
    finally:
        holder.communicate("")
    assert _snapshot(store) == before
