"""How surely the adapter check passes the right adapter and catches the wrong one, on real adapters.

1. Runs `online-cut run` on configs/quickstart.yaml (or `--config`) for `--rounds` rounds,
   `--repeats` times, each run in its own store under `--folder` (a rerun of this script
   resumes or reuses them: the store says what is done). Every round's attaches on the run's
   own engine (vllm-merged here) are checked and stored in `adapter_checks`.
2. Opens one engine per `--backends` (default: the LoRA path, vllm-lora, and a fresh merged
   engine) in the config's dtype and attaches every trained adapter of those runs:
   - the right adapter with its stored fingerprint: must pass (`match` or `indistinguishable`);
   - its parent's weights (the previous round's adapter, or the base model for round 1) with
     the adapter's fingerprint, as a sampler that missed a round's swap would serve: must fail.

The last line is JSON: per way, how many right adapters were rejected (or passed as
indistinguishable) and wrong ones passed, with the figures the verdict rests on
(cut/fingerprint.py `match`): `position`, where the engine's scores lie from the parent's log-probs
(0) to the adapter's (1), above 0.5 passes; `separation`, adapter and parent apart in units of the
engine's noise, under 6 is indistinguishable; `margin`, the tolerance over the mean |Δ log p|
from the adapter's log-probs, above 1 passes. `runs` sums up the checks the runs stored.

    .venv/bin/python bench/adapter_check.py [--rounds 5] [--repeats 3] [--folder .bench/adapter-check]

About 30 minutes on 2 CPU cores for the default runs; alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_config(config: Path, folder: Path, rounds: int) -> Path:
    settings = yaml.safe_load(config.read_text())
    settings["rounds"] = rounds
    settings["storage"] = {"db": str(folder / "store.duckdb"), "adapters_dir": str(folder / "adapters"),
                           "exports_dir": str(folder / "exports")}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_alignment(config: Path, run: str) -> None:
    from online_cut.base_model import default_cache_dir

    env = {**os.environ, "ONLINE_CUT_CACHE": str(default_cache_dir().resolve())}
    command = [str(Path(sys.executable).with_name("online-cut")), "run", "--config", str(config), "--run", run]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True)
    print(f"{run}: done in {time.perf_counter() - started:.0f} s", flush=True)


def stored_checks(folder: Path) -> list[dict]:
    """What the run's own engine found at each attach."""
    from storage.store import Store

    return Store(folder / "store.duckdb").query(
        "SELECT run, round, step, adapter_id, backend, verdict, fingerprint_mean_abs, tolerance_mean_abs, "
        "position, separation, noise_mean_abs FROM adapter_checks ORDER BY run, round, step")


def trained_adapters(folder: Path) -> list[tuple[str, Path, Path | None]]:
    """Each trained adapter of the store: (id, folder, its parent's folder; None: the base model)."""
    from storage.store import Store

    adapters = Store(folder / "store.duckdb").adapters()
    by_id = {a.adapter_id: a for a in adapters}
    return [(a.adapter_id, Path(a.path), Path(by_id[a.parent_id].path) if a.parent_id else None) for a in adapters]


def attach_all(backend: str, settings, adapters: list[tuple[str, Path, Path | None]]) -> list[dict]:
    """Attach each adapter (right) and its parent under the adapter's fingerprint (wrong) on one engine."""
    from cut.fingerprint import read_fingerprint
    from samplers.base import AdapterMismatchError
    from samplers.factory import open_sampler

    config = settings.sampler.model_copy(update={"backend": backend})
    results = []
    with open_sampler(config, settings.model.name_or_path(), dtype=settings.model.dtype,
                      max_model_len=settings.model.max_model_len) as sampler:
        sampler.attach(None)  # the engine's noise is measured on the base model at the first fingerprint
        for adapter_id, path, parent in adapters:
            fingerprint = read_fingerprint(path)
            for case, served in (("right", path), ("wrong", parent)):
                try:
                    if served is None:  # round 1's parent: the base model
                        check = sampler.check_fingerprint(sampler.attach(None), fingerprint)
                    else:
                        check = sampler.attach(served, name=f"{adapter_id}-{case}", fingerprint=fingerprint)
                    results.append(figures(backend, adapter_id, case, check.fingerprint))
                except AdapterMismatchError as error:
                    results.append(figures(backend, adapter_id, case, error.found))
    return results


def figures(backend: str, adapter_id: str, case: str, found) -> dict:
    return {
        "backend": backend, "adapter": adapter_id, "case": case, "verdict": found.verdict,
        "mean_abs": found.adapter.mean_abs, "tolerance": found.tolerance, "position": found.position,
        "separation": found.separation, "noise_mean_abs": found.noise.mean_abs, "noise_rms": found.noise.rms,
    }


def spread(values: list[float], digits: int = 3) -> list[float]:
    """[min, median, max]."""
    ordered = sorted(values)
    return [round(ordered[0], digits), round(ordered[len(ordered) // 2], digits), round(ordered[-1], digits)]


def summary(results: list[dict], checks: list[dict]) -> dict:
    ways = {}
    for backend in sorted({r["backend"] for r in results}):
        right = [r for r in results if r["backend"] == backend and r["case"] == "right"]
        wrong = [r for r in results if r["backend"] == backend and r["case"] == "wrong"]
        ways[backend] = {
            "right": len(right),
            "right_rejected": sum(r["verdict"] == "mismatch" for r in right),
            "right_indistinguishable": sum(r["verdict"] == "indistinguishable" for r in right),
            "wrong": len(wrong),
            "wrong_passed": sum(r["verdict"] != "mismatch" for r in wrong),
            "noise_mean_abs": round(right[0]["noise_mean_abs"], 4),
            "noise_rms": round(right[0]["noise_rms"], 4),
            "right_position": spread([r["position"] for r in right]),
            "wrong_position": spread([r["position"] for r in wrong]),
            "separation": spread([r["separation"] for r in right], 1),
            "right_margin": spread([r["tolerance"] / r["mean_abs"] for r in right], 2),
        }
    stored = [c for c in checks if c["verdict"] is not None]
    return {
        "bench": "adapter_check",
        "runs": {
            "checks": len(stored),
            "verdicts": {v: sum(c["verdict"] == v for c in stored) for v in ("match", "indistinguishable")},
            "position": spread([c["position"] for c in stored]),
            "separation": spread([c["separation"] for c in stored], 1),
            "margin": spread([c["tolerance_mean_abs"] / c["fingerprint_mean_abs"] for c in stored], 2),
        },
        "ways": ways,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=REPO / ".bench" / "adapter-check")
    parser.add_argument("--backends", default="vllm-lora,vllm-merged")
    args = parser.parse_args()

    from online_cut.config import load_config

    args.folder.mkdir(parents=True, exist_ok=True)
    config = run_config(args.config, args.folder, args.rounds)
    for repeat in range(1, args.repeats + 1):
        run_alignment(config, f"fp-{repeat}")
    settings = load_config(config)
    adapters = trained_adapters(args.folder)
    results = []
    for backend in args.backends.split(","):
        results += attach_all(backend, settings, adapters)
    (args.folder / "attaches.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(summary(results, stored_checks(args.folder))))


if __name__ == "__main__":
    main()
