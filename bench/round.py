"""Where a quickstart round's time goes: one round of `online-cut run`, timed step by step.

Runs `online-cut run --rounds 1` on configs/quickstart.yaml (or `--config`) with a fresh
store in a temporary folder, as a user would start it, then reads the step seconds the round
stored (`rounds`, `training_steps`) and prints them with the figures below.

- `train_over_steps`: the train step's wall time (read the round's triples, tokenize, load the
  model, train, save the adapter and its fingerprint, store steps and flags) over the sum of
  its optimizer steps' times (each step's micro-batches and update). 1.0: nothing but steps.
- `round_overhead_share`: the round's wall time outside its steps (sample, judge, train,
  evaluate) over the round's wall time: what orchestration (Prefect tasks, the store's writes
  between steps, the gate) costs. `round_summary.overhead_share` in the store.
- `time_to_first_sample_s`: from launching the command to the first stored response (the
  engine's start, the first batch's sampling, its storing): what a user waits before round 1
  has anything to show. `engine_start_s`: the config's sampler started alone in a fresh
  process (imports included), measured before the round; `first_sample_after_engine_s` the
  difference: what the run adds to the engine's own start.
- `watchdog_cpu_share`: the CPU time of the run's watchdog (online_cut/watchdog.py, a
  process-tree scan a second) over the command's wall time: the share of one core it took
  from the engine and the trainer.
- `train_flops_share`: the training steps' achieved FLOP/s over the fastest float32 matrix
  multiply measured in this process after the round, on the same cores (`bench/flops.py`).
  Only the model body's weight multiplies are counted, not attention or the LM head, so the
  share is a lower bound.

`--engine-arg enforce_eager=true` passes vLLM arguments through `sampler.engine_args`;
`--fresh-compile-cache` starts vLLM and torch's compile caches empty, as on a fresh machine
(by default both caches are the user's, as warm as earlier runs left them).

Run: `.venv/bin/python bench/round.py` (about 3 minutes on 2 CPU cores; alone on the
machine). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timezone
from pathlib import Path

import duckdb
import psutil
import torch
import yaml

from flops import body_weights, dense_step_flops, matmul_peak_flops

REPO = Path(__file__).resolve().parents[1]
STEPS = ("sample_s", "judge_s", "refine_s", "train_s", "eval_s")


def engine_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. enforce_eager=true")
    return key, yaml.safe_load(value)


def round_config(config: Path, folder: Path, engine_args: dict[str, object]) -> Path:
    """`config` for one round with its store in `folder` and `engine_args` added to the sampler's."""
    settings = yaml.safe_load(config.read_text())
    settings["rounds"] = 1
    settings["storage"] = {"db": str(folder / "store.duckdb"), "adapters_dir": str(folder / "adapters"),
                           "exports_dir": str(folder / "exports")}
    sampler = settings.setdefault("sampler", {})
    sampler["engine_args"] = {**sampler.get("engine_args", {}), **engine_args}
    path = folder / "round.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def cache_env(folder: Path, fresh_compile_cache: bool) -> dict[str, str]:
    from online_cut.base_model import default_cache_dir

    env = {**os.environ, "ONLINE_CUT_CACHE": str(default_cache_dir().resolve())}
    if fresh_compile_cache:
        env |= {"VLLM_CACHE_ROOT": str(folder / "vllm-cache"), "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}
    return env


ENGINE_START = """
import sys, time
started = time.perf_counter()
from online_cut.config import load_config
from samplers.factory import open_sampler
settings = load_config(sys.argv[1])
with open_sampler(settings.sampler, settings.model.name_or_path(), dtype=settings.model.dtype,
                  max_model_len=settings.model.max_model_len):
    print("engine started in", time.perf_counter() - started)
"""


def engine_start_s(config: Path, env: dict[str, str]) -> float:
    """Seconds a fresh process takes to import and start the config's sampler, nothing else."""
    out = subprocess.run([sys.executable, "-c", ENGINE_START, str(config)], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    (line,) = (line for line in out.splitlines() if line.startswith("engine started in"))
    return float(line.split()[-1])


def watchdog_cpu_s(command: subprocess.Popen, seconds: list[float]) -> None:
    """Note the CPU seconds of `command`'s watchdog in `seconds[0]` until the command ends."""
    while command.poll() is None:
        for process in psutil.process_iter(["cmdline", "cpu_times"]):
            cmdline = process.info["cmdline"] or []
            if "online_cut.watchdog" in cmdline and str(command.pid) in cmdline:
                times = process.info["cpu_times"]
                seconds[0] = max(seconds[0], times.user + times.system)
        time.sleep(0.5)


def run_round(config: Path, folder: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Run the round; (launch time as a Unix time, the command's wall seconds, its watchdog's CPU seconds)."""
    command = [str(Path(sys.executable).with_name("online-cut")), "run", "--config", str(config), "--run", "bench"]
    launched = time.time()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL)
    watchdog = [0.0]
    watching = threading.Thread(target=watchdog_cpu_s, args=(process, watchdog))
    watching.start()
    if process.wait():
        raise SystemExit(f"online-cut run failed with exit status {process.returncode}")
    command_s = time.perf_counter() - started
    watching.join()
    return launched, command_s, watchdog[0]


def trained_weights(config: Path) -> tuple[int, int]:
    """(frozen, trainable) body weights of the configured model with its LoRA, counted without loading it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from cut.lora import add_lora
    from online_cut.config import load_config

    settings = load_config(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(settings.model.name_or_path()))
    lora = settings.cut.lora
    return body_weights(add_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml", help="the run's config")
    parser.add_argument("--engine-arg", type=engine_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="a vllm.LLM argument for the round's engine (repeatable), e.g. enforce_eager=true")
    parser.add_argument("--fresh-compile-cache", action="store_true",
                        help="start vLLM's and torch's compile caches empty, as a fresh machine does")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
        folder = Path(tmp)
        config = round_config(args.config.resolve(), folder, dict(args.engine_arg))
        env = cache_env(folder, args.fresh_compile_cache)
        engine_s = engine_start_s(config, env)
        print(f"engine start alone: {engine_s:.1f} s", flush=True)
        launched, command_s, watchdog_s = run_round(config, folder, env)
        with duckdb.connect(str(folder / "store.duckdb"), read_only=True) as db:
            rounds = db.execute(f"SELECT {', '.join(STEPS)}, wall_s, overhead_share FROM round_summary "
                                "WHERE run = 'bench'").fetchone()
            first_response = db.execute("SELECT min(created_at) FROM responses").fetchone()[0]
            steps = db.execute("SELECT seconds, tokens_per_s FROM training_steps WHERE run = 'bench'").fetchall()
        weights = trained_weights(config)

    *steps_of_round, wall_s, overhead_share = rounds
    step_s = dict(zip(STEPS, (s or 0.0 for s in steps_of_round)))
    for name, seconds in step_s.items():
        print(f"{name[:-2]:>8}: {seconds:7.1f} s")
    print(f"{'round':>8}: {wall_s:7.1f} s of the command's {command_s:.1f} s")

    steps_s = sum(seconds for seconds, _ in steps)
    tokens = sum(seconds * tokens_per_s for seconds, tokens_per_s in steps)
    achieved = dense_step_flops(*weights, tokens) / steps_s
    peak = matmul_peak_flops(torch.device("cpu"), torch.float32)
    first_sample_s = first_response.replace(tzinfo=timezone.utc).timestamp() - launched
    print(json.dumps({
        "config": str(args.config),
        "engine_args": dict(args.engine_arg),
        "fresh_compile_cache": args.fresh_compile_cache,
        "command_s": command_s,
        "round_wall_s": wall_s,
        "step_s": step_s,
        "optimizer_steps": len(steps),
        "optimizer_steps_s": steps_s,
        "engine_start_s": engine_s,
        "time_to_first_sample_s": first_sample_s,
        "first_sample_after_engine_s": first_sample_s - engine_s,
        "watchdog_cpu_share": watchdog_s / command_s,
        "train_over_steps": step_s["train_s"] / steps_s,
        "round_overhead_share": overhead_share,
        "train_flops_per_s": achieved,
        "matmul_peak_flops_per_s": peak,
        "train_flops_share": achieved / peak,
    }))


if __name__ == "__main__":
    main()
