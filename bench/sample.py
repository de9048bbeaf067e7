"""Sampling speed from one trained-like adapter: the pipeline's sampler against each raw way.

The same 256 prompts (greedy, up to 64 new tokens) and the same adapter (a random LoRA, r=16
on every projection, standing in for a trained one) go through:
  - pipeline          the sampler `auto` picks for this machine, adapter attached as a round would
  - vllm-lora         vllm.LLM(enable_lora=True) with a LoRARequest
  - vllm-merged       a fresh vllm.LLM on a folder holding the merged weights
  - transformers      batched generate (32 a batch, left padding) with the PEFT adapter
vLLM runs in the dtype the pipeline picks for the device (`resolve_dtype`), so the ways
differ only in how the adapter reaches the model. Each way is warmed up on a few prompts first; only generation is timed (adapter loading,
merging and engine starts are printed apart). The last line is one JSON object with
`pipeline_over_best`: the pipeline's tokens/s over the fastest raw way's.

The adapter's fingerprint check (`samplers.base`) is measured on the pipeline's sampler and on
each of `--fingerprint-backends`: `fingerprint_max_abs` (and the mean) is the distance of the
engine's scores of the probe tokens from the float32 ones written with the adapter, and
`engine_noise_mean_abs` the engine's own on the base model (docs/adapter-check.md);
`fingerprint_check_s` one check's time, and `fingerprint_check_share` the
pipeline's over the time to sample a quickstart round (configs/quickstart.yaml: per_round x n
samples of the mean completion length measured here, at the pipeline's tokens/s).

    .venv/bin/python bench/sample.py [--prompts 256] [--max-tokens 64] [--fingerprint-backends vllm-lora,transformers]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
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


def timed(label: str, generate) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = generate()
    seconds = time.perf_counter() - started
    print(f"{label:14s} {tokens:6d} tokens in {seconds:7.1f} s = {tokens / seconds:7.1f} tokens/s", flush=True)
    return tokens / seconds, tokens


@dataclass
class FingerprintFigures:
    max_abs: float
    mean_abs: float
    noise: float  # the engine's own mean |Δ log p| on the base model
    check_s: float


def fingerprint_figures(sampler, adapter: Path) -> FingerprintFigures:
    """Attach `adapter` (its fingerprint checked), then time one more check on its own."""
    from cut.fingerprint import read_fingerprint

    check = sampler.attach(adapter, name="bench")
    started = time.perf_counter()
    sampler.check_fingerprint(check, read_fingerprint(adapter))
    found = check.fingerprint
    figures = FingerprintFigures(found.adapter.max_abs, found.adapter.mean_abs, found.noise.mean_abs,
                                 time.perf_counter() - started)
    print(f"{sampler.backend}: fingerprint max |Δ log p| {figures.max_abs:.2e}, mean {figures.mean_abs:.2e}, "
          f"engine noise {figures.noise:.2e}, check {figures.check_s:.2f} s", flush=True)
    return figures


def pipeline_way(model: str, adapter: Path, prompts, settings) -> tuple[str, float, float, FingerprintFigures]:
    """The pipeline's backend, its tokens/s, mean completion tokens and fingerprint figures."""
    from samplers.config import SamplerConfig
    from samplers.factory import open_sampler

    started = time.perf_counter()
    with open_sampler(SamplerConfig(kv_cache_gib=KV_CACHE_GIB), model, max_model_len=MAX_MODEL_LEN) as sampler:
        print(f"pipeline: {sampler.backend} ({sampler.reason}); started in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        figures = fingerprint_figures(sampler, adapter)
        print(f"pipeline: attach with adapter checks {time.perf_counter() - started:.1f} s", flush=True)
        sampler.sample(prompts[:WARMUP_PROMPTS], settings)
        speed, tokens = timed("pipeline", lambda: sum(s.completion_tokens for s in sampler.sample(prompts, settings)))
        return sampler.backend, speed, tokens / len(prompts), figures


def backend_fingerprint(backend: str, model: str, adapter: Path) -> FingerprintFigures:
    from samplers.config import SamplerConfig
    from samplers.factory import open_sampler

    with open_sampler(SamplerConfig(backend=backend, kv_cache_gib=KV_CACHE_GIB), model, max_model_len=MAX_MODEL_LEN) as sampler:
        return fingerprint_figures(sampler, adapter)


def vllm_way(label: str, model: str, prompts, settings, lora_path: Path | None = None) -> float:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from samplers.factory import resolve_dtype

    options = {"enable_lora": True, "max_lora_rank": 16, "max_loras": 1} if lora_path else {}
    llm = LLM(model=model, dtype=resolve_dtype("auto", "vllm-merged"), max_model_len=MAX_MODEL_LEN,
              kv_cache_memory_bytes=int(KV_CACHE_GIB * 2**30), **options)
    params = SamplingParams(temperature=0, max_tokens=settings.max_tokens)
    request = LoRARequest("bench", 1, str(lora_path)) if lora_path else None
    conversations = [p.messages() for p in prompts]

    def generate(batch) -> int:
        outputs = llm.chat(batch, params, lora_request=request)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    generate(conversations[:WARMUP_PROMPTS])
    speed, _ = timed(label, lambda: generate(conversations))
    llm.llm_engine.engine_core.shutdown()
    return speed


def transformers_way(model_dir: str, adapter: Path, prompts, settings) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), str(adapter))
    model.eval()
    eos = model.generation_config.eos_token_id

    def generate(batch) -> int:
        texts = [tokenizer.apply_chat_template(p.messages(), tokenize=False, add_generation_prompt=True) for p in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=settings.max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, inputs.input_ids.shape[1]:]
        ends = [(row == eos).nonzero() for row in new]
        return sum(int(end[0]) + 1 if len(end) else new.shape[1] for end in ends)

    generate(prompts[:WARMUP_PROMPTS])
    speed, _ = timed("transformers", lambda: sum(
        generate(prompts[i : i + TRANSFORMERS_BATCH]) for i in range(0, len(prompts), TRANSFORMERS_BATCH)
    ))
    return speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ways", default="pipeline,vllm-merged,transformers,vllm-lora")
    parser.add_argument("--fingerprint-backends", default="vllm-lora,transformers",
                        help="back-ends besides the pipeline's whose fingerprint noise to measure ('' for none)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from online_cut.base_model import shipped_model_dir
    from online_cut.config import load_config
    from samplers.adapters import write_merged_weights
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from random_adapter import write_random_adapter
    from samplers.records import SamplingSettings

    model = str(shipped_model_dir())
    prompts = bench_prompts(args.prompts)
    settings = SamplingSettings(n=1, temperature=0.0, max_tokens=args.max_tokens)
    ways = args.ways.split(",")
    speeds: dict[str, float] = {}
    fingerprints: dict[str, FingerprintFigures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as tmp:
        adapter = write_random_adapter(model, Path(tmp) / "adapter", seed=0, scale=0.05, rank=16)
        if "pipeline" in ways:
            backend, speeds["pipeline"], mean_tokens, fingerprints[backend] = pipeline_way(model, adapter, prompts, settings)
        for other in filter(None, args.fingerprint_backends.split(",")):
            fingerprints[other] = backend_fingerprint(other, model, adapter)
        if "vllm-merged" in ways:
            merged = Path(tmp) / "merged"
            started = time.perf_counter()
            write_merged_weights(model, adapter, merged)
            AutoTokenizer.from_pretrained(model).save_pretrained(merged)  # with its chat template
            print(f"vllm-merged: merged weights written in {time.perf_counter() - started:.1f} s", flush=True)
            speeds["vllm-merged"] = vllm_way("vllm-merged", str(merged), prompts, settings)
        if "transformers" in ways:
            speeds["transformers"] = transformers_way(model, adapter, prompts, settings)
        # Last: by far the slowest on CPU, so the close contenders run back to back.
        if "vllm-lora" in ways:
            speeds["vllm-lora"] = vllm_way("vllm-lora", model, prompts, settings, lora_path=adapter)

    raw = {way: speed for way, speed in speeds.items() if way != "pipeline"}
    quickstart = load_config(REPO / "configs" / "quickstart.yaml")
    round_sampling_s = (
        quickstart.prompts.per_round * quickstart.sampler.n * mean_tokens / speeds["pipeline"] if "pipeline" in speeds else None
    )
    best_way = max(raw, key=raw.get) if raw else None
    result = {
        "bench": "sample",
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "tokens_per_s": {way: round(speed, 1) for way, speed in speeds.items()},
        "pipeline_backend": backend if "pipeline" in speeds else None,
        "best_way": best_way,
        "pipeline_over_best": round(speeds["pipeline"] / raw[best_way], 3) if "pipeline" in speeds and raw else None,
        "fingerprint_max_abs": {name: float(f"{f.max_abs:.3g}") for name, f in fingerprints.items()},
        "fingerprint_mean_abs": {name: float(f"{f.mean_abs:.3g}") for name, f in fingerprints.items()},
        "engine_noise_mean_abs": {name: float(f"{f.noise:.3g}") for name, f in fingerprints.items()},
        "fingerprint_check_s": {name: round(f.check_s, 3) for name, f in fingerprints.items()},
        "quickstart_round_sampling_s": round(round_sampling_s, 1) if round_sampling_s else None,
        "fingerprint_check_share": (
            round(fingerprints[backend].check_s / round_sampling_s, 4) if round_sampling_s else None
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
