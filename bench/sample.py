"""Sampling speed from one trained-like adapter: the pipeline's sampler against raw vLLM, and what its check costs.

The same prompts (greedy, up to `--max-tokens` new tokens) and the same adapter (a random LoRA,
r=16 on every projection, standing in for a trained one) go through:
  - pipeline          the sampler `auto` picks for this machine, the adapter attached and checked as a round does
  - vllm-merged       a fresh vllm.LLM on a folder holding the merged weights (the fastest raw way on a CPU)
  - vllm-lora         vllm.LLM(enable_lora=True) with a LoRARequest          } opt-in with --ways: on 2 CPU
  - transformers      batched generate (32 a batch, left padding) with PEFT  } cores minutes per pass
vLLM runs in the dtype and mode the pipeline picks for the device (`resolve_dtype`; eager on a CPU,
samplers/vllm_inprocess.py) with the pipeline's CPU binding, so the ways differ only in how the
adapter reaches the model. The opt-in way `vllm-merged-compiled` is vllm-merged in vLLM's own
default mode (compiled with inductor on a CPU): the engine-mode trade-off, its start included
(`start_s`), beside the adapter path's; docs/cold-start.md has its figures.

Every way is measured alike: a fresh engine, warmed on the same few prompts, then `--passes`
timed passes over all prompts; the ways take turns `--turns` times (pipeline, merged, pipeline,
merged, ...), so a warm-up paid by whichever runs first, or the machine's speed drifting, hits
each way alike. A way's tokens/s is the median of its passes, its spread (max - min) / median.
Only generation is timed; engine starts, merging and the pipeline's attach are printed apart.

The pipeline's attach is timed at every turn, as a round attaches: the weights reach the engine
(merged and reloaded, on a CPU) and are checked (the probe against the base model's and the
fingerprint, `samplers.base`). `pipeline_attach_s` is its median, `fingerprint_check_s` that of one
fingerprint check alone, `attach_share` the attach's part of a quickstart round's sampling
(configs/quickstart.yaml: per_round x n samples of the mean length measured here, plus the attach),
and `pipeline_with_attach_over_best` the pipeline's speed with the attach in. `fingerprint_max_abs`
and `engine_noise_mean_abs` are the check's distance from the trainer's float32 log-probs and the
engine's own noise (docs/adapter-check.md); `--fingerprint-backends vllm-lora,transformers` measures
them on other back-ends too.

    .venv/bin/python bench/sample.py [--prompts 256] [--max-tokens 64] [--passes 3] [--turns 2]
                                     [--ways pipeline,vllm-merged] [--fingerprint-backends ...]

Alone on the machine (3 to 8 minutes on 2 cores, as fast as the day's machine). The last line is one JSON object with
`pipeline_over_best`: the pipeline's tokens/s over the fastest raw way's, and each way's seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WARMUP_PROMPTS = 8
KV_CACHE_GIB = 1.0
MAX_MODEL_LEN = 1024
TRANSFORMERS_BATCH = 32


def bench_prompts(count: int):
    from samplers.prompts import suite_prompts

    return suite_prompts("addition", "train", count // 2) + suite_prompts("format", "train", count - count // 2)


@dataclass
class Pass:
    tokens: int
    seconds: float


@dataclass
class FingerprintFigures:
    max_abs: float
    mean_abs: float
    noise: float  # the engine's own mean |Δ log p| on the base model


def timed_passes(label: str, generate, prompts, passes: int) -> list[Pass]:
    """Warm up on the first few prompts, then time `passes` passes over all of them; `generate` returns tokens."""
    generate(prompts[:WARMUP_PROMPTS])
    timed = []
    for _ in range(passes):
        started = time.perf_counter()
        tokens = generate(prompts)
        timed.append(Pass(tokens, time.perf_counter() - started))
        print(f"{label:14s} {tokens:6d} tokens in {timed[-1].seconds:6.1f} s = {tokens / timed[-1].seconds:6.1f} tokens/s",
              flush=True)
    return timed


def fingerprint_figures(check) -> FingerprintFigures:
    found = check.fingerprint
    return FingerprintFigures(found.adapter.max_abs, found.adapter.mean_abs, found.noise.mean_abs)


@dataclass
class PipelineTurn:
    backend: str
    start_s: float
    passes: list[Pass]
    attach_s: float  # the adapter attached as a round attaches it, checks included
    fingerprint_check_s: float  # one fingerprint check alone
    fingerprint: FingerprintFigures


def pipeline_turn(model: str, adapter: Path, prompts, settings, passes: int) -> PipelineTurn:
    from cut.fingerprint import read_fingerprint
    from samplers.config import SamplerConfig
    from samplers.factory import open_sampler

    started = time.perf_counter()
    with open_sampler(SamplerConfig(kv_cache_gib=KV_CACHE_GIB), model, max_model_len=MAX_MODEL_LEN) as sampler:
        start_s = time.perf_counter() - started
        print(f"pipeline: {sampler.backend} ({sampler.reason}); started in {start_s:.0f} s", flush=True)
        started = time.perf_counter()
        check = sampler.attach(adapter, name="bench")
        attach_s = time.perf_counter() - started
        started = time.perf_counter()
        sampler.check_fingerprint(check, read_fingerprint(adapter))
        check_s = time.perf_counter() - started
        print(f"pipeline: attach with adapter checks {attach_s:.1f} s, a fingerprint check alone {check_s:.2f} s",
              flush=True)
        generate = lambda batch: sum(s.completion_tokens for s in sampler.sample(batch, settings))  # noqa: E731
        return PipelineTurn(sampler.backend, start_s, timed_passes("pipeline", generate, prompts, passes), attach_s, check_s,
                            fingerprint_figures(check))


def backend_fingerprint(backend: str, model: str, adapter: Path) -> FingerprintFigures:
    from samplers.config import SamplerConfig
    from samplers.factory import open_sampler

    with open_sampler(SamplerConfig(backend=backend, kv_cache_gib=KV_CACHE_GIB), model, max_model_len=MAX_MODEL_LEN) as sampler:
        return fingerprint_figures(sampler.attach(adapter, name="bench"))


def vllm_turn(label: str, model: str, prompts, settings, passes: int, lora_path: Path | None = None,
              eager: bool = True) -> tuple[list[Pass], float]:
    """The way's passes and its engine's start seconds."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from samplers.factory import resolve_dtype
    from samplers.vllm_inprocess import platform_options

    options = {"enable_lora": True, "max_lora_rank": 16, "max_loras": 1} if lora_path else {}
    started = time.perf_counter()
    # eager as the pipeline's engine on a CPU (samplers/vllm_inprocess.py); vLLM's default on a GPU
    llm = LLM(model=model, dtype=resolve_dtype("auto", "vllm-merged"), max_model_len=MAX_MODEL_LEN,
              kv_cache_memory_bytes=int(KV_CACHE_GIB * 2**30), **(platform_options() if eager else {}), **options)
    start_s = time.perf_counter() - started
    print(f"{label}: started in {start_s:.0f} s", flush=True)
    params = SamplingParams(temperature=0, max_tokens=settings.max_tokens)
    request = LoRARequest("bench", 1, str(lora_path)) if lora_path else None

    def generate(batch) -> int:
        outputs = llm.chat([p.messages() for p in batch], params, lora_request=request)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    try:
        return timed_passes(label, generate, prompts, passes), start_s
    finally:
        llm.llm_engine.engine_core.shutdown()


def transformers_turn(model_dir: str, adapter: Path, prompts, settings, passes: int) -> list[Pass]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), str(adapter))
    model.eval()
    eos = model.generation_config.eos_token_id

    def generate_batch(batch) -> int:
        texts = [tokenizer.apply_chat_template(p.messages(), tokenize=False, add_generation_prompt=True) for p in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=settings.max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, inputs.input_ids.shape[1]:]
        ends = [(row == eos).nonzero() for row in new]
        return sum(int(end[0]) + 1 if len(end) else new.shape[1] for end in ends)

    def generate(batch) -> int:
        return sum(generate_batch(batch[i : i + TRANSFORMERS_BATCH]) for i in range(0, len(batch), TRANSFORMERS_BATCH))

    return timed_passes("transformers", generate, prompts, passes)


def speed_figures(passes: list[Pass]) -> dict[str, object]:
    speeds = [p.tokens / p.seconds for p in passes]
    median = statistics.median(speeds)
    return {"tokens_per_s": round(median, 1), "spread": round((max(speeds) - min(speeds)) / median, 3),
            "seconds": [round(p.seconds, 2) for p in passes]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3, help="timed passes over all prompts per turn of a way")
    parser.add_argument("--turns", type=int, default=2, help="times the ways take turns, each with a fresh engine")
    parser.add_argument("--ways", default="pipeline,vllm-merged",
                        help="of pipeline, vllm-merged, vllm-merged-compiled, vllm-lora, transformers (comma-separated)")
    parser.add_argument("--fingerprint-backends", default="",
                        help="back-ends besides the pipeline's whose fingerprint noise to measure, e.g. vllm-lora,transformers")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from online_cut.base_model import shipped_model_dir
    from online_cut.config import load_config
    from samplers.adapters import write_merged_weights
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from random_adapter import write_random_adapter
    from samplers.records import SamplingSettings
    from samplers.vllm_inprocess import bind_all_cpus

    bind_all_cpus({})  # as the pipeline's engine: raw ways started first would otherwise keep a core idle
    model = str(shipped_model_dir())
    prompts = bench_prompts(args.prompts)
    settings = SamplingSettings(n=1, temperature=0.0, max_tokens=args.max_tokens)
    ways = args.ways.split(",")
    passes: dict[str, list[Pass]] = defaultdict(list)
    starts: dict[str, list[float]] = defaultdict(list)  # the engine ways' start seconds, a turn each
    pipeline_turns: list[PipelineTurn] = []
    fingerprints: dict[str, FingerprintFigures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as tmp:
        adapter = write_random_adapter(model, Path(tmp) / "adapter", seed=0, scale=0.05, rank=16)
        merged = Path(tmp) / "merged"
        if {"vllm-merged", "vllm-merged-compiled"} & set(ways):
            started = time.perf_counter()
            write_merged_weights(model, adapter, merged)
            AutoTokenizer.from_pretrained(model).save_pretrained(merged)  # with its chat template
            print(f"vllm-merged: merged weights written in {time.perf_counter() - started:.1f} s", flush=True)
        for turn in range(1, args.turns + 1):
            print(f"turn {turn} of {args.turns}", flush=True)
            if "pipeline" in ways:
                pipeline_turns.append(pipeline_turn(model, adapter, prompts, settings, args.passes))
                passes["pipeline"] += pipeline_turns[-1].passes
                starts["pipeline"].append(pipeline_turns[-1].start_s)
                fingerprints["pipeline"] = pipeline_turns[-1].fingerprint
            for way in ("vllm-merged", "vllm-merged-compiled"):
                if way in ways:
                    timed, start_s = vllm_turn(way, str(merged), prompts, settings, args.passes,
                                               eager=way == "vllm-merged")
                    passes[way] += timed
                    starts[way].append(start_s)
            if "transformers" in ways:
                passes["transformers"] += transformers_turn(model, adapter, prompts, settings, args.passes)
            if "vllm-lora" in ways:
                timed, start_s = vllm_turn("vllm-lora", model, prompts, settings, args.passes, lora_path=adapter)
                passes["vllm-lora"] += timed
                starts["vllm-lora"].append(start_s)
        for other in filter(None, args.fingerprint_backends.split(",")):
            fingerprints[other] = backend_fingerprint(other, model, adapter)

    figures = {way: speed_figures(timed) | ({"start_s": [round(x, 1) for x in starts[way]]} if way in starts else {})
               for way, timed in passes.items()}
    speed = {way: f["tokens_per_s"] for way, f in figures.items()}
    raw = {way: s for way, s in speed.items() if way != "pipeline"}
    best_way = max(raw, key=raw.get) if raw else None
    result = {
        "bench": "sample",
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "passes_per_way": {way: len(timed) for way, timed in passes.items()},
        "ways": figures,
        "best_way": best_way,
    }
    if "pipeline" in speed:
        pipeline = passes["pipeline"]
        mean_tokens = sum(p.tokens for p in pipeline) / (len(pipeline) * len(prompts))
        quickstart = load_config(REPO / "configs" / "quickstart.yaml")
        round_sampling_s = quickstart.prompts.per_round * quickstart.sampler.n * mean_tokens / speed["pipeline"]
        attach_s = statistics.median(turn.attach_s for turn in pipeline_turns)
        over_best = speed["pipeline"] / raw[best_way] if raw else None
        result |= {
            "pipeline_backend": pipeline_turns[0].backend,
            "pipeline_over_best": round(over_best, 3) if over_best else None,
            "pipeline_attach_s": round(attach_s, 2),
            "fingerprint_check_s": round(statistics.median(turn.fingerprint_check_s for turn in pipeline_turns), 3),
            "quickstart_round_sampling_s": round(round_sampling_s, 1),
            "attach_share": round(attach_s / (round_sampling_s + attach_s), 3),
            "pipeline_with_attach_over_best": (
                round(over_best * round_sampling_s / (round_sampling_s + attach_s), 3) if over_best else None
            ),
        }
    result |= {
        "fingerprint_max_abs": {name: float(f"{f.max_abs:.3g}") for name, f in fingerprints.items()},
        "engine_noise_mean_abs": {name: float(f"{f.noise:.3g}") for name, f in fingerprints.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
