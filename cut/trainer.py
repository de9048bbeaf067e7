"""The LoRA trainer: triples in, a PEFT adapter folder out (CUT or a baseline objective).

One readable loop: micro-batch → forward (logits only at response positions) → loss →
backward; every `grad_accum` micro-batches clip, step, schedule and report. The loss is
`cut_loss` on token rows (cut and the MLE baselines) or `dpo_loss` on preference pairs (dpo,
after one reference pass over the pairs). What a round reports of the flags comes from the
training passes themselves: each row's probabilities and flags on its first visit.

Run by `accelerate launch` on several processes (DDP), each optimizer step takes
`grad_accum` micro-batches per process, gradients are averaged across processes, and only
the main process writes the adapter. Run directly, it is one process and the same loop.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import shutil
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from cut.batches import Batch, collate, micro_batches
from cut.config import CutConfig, LoraConfig
from cut.data import Triple, balanced_indices
from cut.dpo import dpo_micro_batch, dpo_step_metrics, pair_rows, with_reference
from cut.fingerprint import Fingerprint, adapter_fingerprint, parent_fingerprint, read_fingerprint, write_fingerprint
from cut.logprobs import autocast_for, computes_in_bfloat16, response_logprobs
from cut.lora import add_lora
from cut.objective import contrast_flags, cut_loss
from cut.pairs import preference_pairs
from cut.batches import TokenRow
from cut.rows import build_rows
from cut.scoring import Detection, FlaggedToken, RowScore, detection, flagged_tokens, row_scores

log = logging.getLogger(__name__)
# A training logs about this many step lines (and its last), the terminal's and the UI's progress.
LOGGED_STEPS = 10


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    # per optimizer step: step, epoch, lr, seconds, tokens_per_s and loss with l1, l2, flagged_frac (cut and
    # the MLE baselines) or reward_margin, reward_accuracy, pairs (dpo)
    steps: list[dict[str, float]]
    flagged: dict[int, list[FlaggedToken]]  # per Align-N triple (index into `triples`), as the loss flagged them
    first_scores: list[RowScore]  # per row (dpo: none), its token probabilities and flags on its first visit
    rows: int  # triples trained on after class balance (dpo: pairing) and the length policy
    dropped: int  # triples whose response did not fit in max_length
    main_process: bool = True  # False in the other processes of a multi-process launch: they wrote nothing
    pairs: list[tuple[int, int]] = field(default_factory=list)  # dpo: (chosen, rejected) indices into `triples`
    detection: Detection | None = None  # the contrast flags against the judges' spans; None: no row had a span
    processes: int = 1  # how many processes trained it together
    process_index: int = 0  # this process's rank among them


def load_lora_model(
    base_model: str, lora: LoraConfig, init_adapter: Path | None, device: torch.device, precision: str = "float32"
) -> torch.nn.Module:
    """The base model with trainable LoRA weights: fresh from `lora`, or `init_adapter` continued. The frozen
    base is held in the training precision (`cut.precision`: a 7B base in bfloat16 is 14 GiB, not 28); PEFT
    keeps the LoRA weights, and so their gradients and optimizer state, in float32."""
    dtype = torch.bfloat16 if computes_in_bfloat16(device, precision) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype).to(device)
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    return add_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)


def release_device_memory() -> None:
    """Give back what a finished training held: the model, optimizer and activations are garbage once
    `train` returns, but CUDA's caching allocator keeps their memory reserved, where a sleeping vLLM
    engine's `wake_up` on the same card cannot have it. Without CUDA nothing is held back: the
    collection (a third of a second in the flow's process here) is left to Python."""
    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def check_replaceable(out_dir: Path) -> None:
    """An existing folder is replaced only if it is empty or holds an adapter."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "adapter_config.json").is_file():
        raise ValueError(f"{out_dir}: not empty and not an adapter folder; refusing to replace it")


def save_adapter(model: PeftModel, out_dir: Path, tokenizer: PreTrainedTokenizerBase, parent: Fingerprint | None,
                 base_model: str) -> None:
    """Write the adapter folder, its fingerprint (`cut.fingerprint`, in float32, with the log-probs of
    the adapter it continued, `parent`, None for a fresh one, and of the base, read from the folder
    `base_model` where it carries them) beside the weights, whole or not at all: into a sibling, then
    renamed into place."""
    check_replaceable(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    write_fingerprint(adapter_fingerprint(model, tokenizer, parent, base_model), partial)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)


def train(
    config: CutConfig,
    base_model: str,
    triples: list[Triple],
    out_dir: Path,
    init_adapter: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a LoRA adapter on `triples` with `config.objective` and save it to `out_dir`."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    # On a CPU, only Accelerator(cpu=True) makes processes started by torchrun one DDP group (gloo).
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.num_processes > 1:
        log.info("training process %d of %d (%s)", accelerator.process_index, accelerator.num_processes,
                 accelerator.distributed_type)
    device = accelerator.device
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if config.objective == "dpo":
        pairs = preference_pairs(triples, config.seed)
        units, dropped = pair_rows(triples, pairs, tokenizer, config)
        trained_pairs = [(p.chosen.triple_index, p.rejected.triple_index) for p in units]
        rows = len({i for pair in trained_pairs for i in pair})
        if not units:
            raise ValueError(f"no DPO pair to train on: {len(triples)} triples, {len(pairs)} pairs of the same prompt "
                             f"with different verdicts or scores, {dropped} triples too long")
    else:
        kept = balanced_indices(triples, config.positive_ratio, config.negative_ratio, config.seed)
        row_set = build_rows(triples, tokenizer, config, kept)
        units, dropped, trained_pairs = row_set.rows, row_set.dropped, []
        rows = len({row.triple_index for row in units})  # forward builds two rows per triple
        if not units:
            raise ValueError(f"no row to train on: {len(triples)} triples, {dropped} too long, objective {config.objective}")

    model = load_lora_model(base_model, config.lora, init_adapter, device, config.precision)
    # The adapter's fingerprint records its parent's probe log-probs: the continued adapter's own
    # fingerprint, scored now only for one written without it.
    parent = None if init_adapter is None else read_fingerprint(init_adapter) or parent_fingerprint(model, tokenizer)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.objective == "dpo":
        units = with_reference(model, units, config, pad_id)
        micro_batch_loss, step_metrics = dpo_micro_batch, dpo_step_metrics
    else:
        micro_batch_loss, step_metrics = cut_micro_batch, cut_step_metrics
    position = {id(unit): i for i, unit in enumerate(units)}
    first_visit: dict[int, RowScore] = {}  # by position in `units`

    per_step = config.grad_accum * accelerator.num_processes  # micro-batches per optimizer step, all processes
    steps_per_epoch = math.ceil(math.ceil(len(units) / config.micro_batch_size) / per_step)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Rounded down: a warm-up step runs at learning rate 0, so a round of one or a few steps gets none.
    schedule = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    model.train()
    metrics: list[dict[str, float]] = []
    reports = progress and accelerator.is_main_process
    bar = tqdm(total=total_steps, desc=f"train ({config.objective})", unit="step", disable=not reports)
    log_every = max(1, total_steps // LOGGED_STEPS)
    for epoch in range(config.epochs):
        batches = micro_batches(units, config.micro_batch_size, config.length_window, rng)
        for step_index in range(steps_per_epoch):
            group = own_micro_batches(batches, step_index, config.grad_accum, accelerator)
            started = time.perf_counter()
            sums: Counter[str] = Counter()
            for index, units_of_batch in enumerate(group):
                # Processes average their gradients once an optimizer step, after its last micro-batch.
                with nullcontext() if index == len(group) - 1 else accelerator.no_sync(model):
                    loss, batch_sums, scores = micro_batch_loss(model, units_of_batch, config, pad_id)
                    accelerator.backward(loss / len(group))
                sums.update(batch_sums)
                for unit, score in zip(units_of_batch, scores):
                    first_visit.setdefault(position[id(unit)], score)
            sums = summed_over_processes(sums, accelerator)
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            step = {
                "step": len(metrics) + 1,
                "epoch": epoch + 1,
                "lr": schedule.get_last_lr()[0],
                **step_metrics(sums, len(group) * accelerator.num_processes),
                "tokens_per_s": sums["tokens"] / seconds,
                "seconds": seconds,
            }
            metrics.append(step)
            bar.update()
            bar.set_postfix({k: f"{v:.3g}" for k, v in step.items() if k not in ("step", "epoch", "lr")})
            if reports and (step["step"] % log_every == 0 or step["step"] == total_steps):
                log.info("training step %d/%d: loss %.4g", step["step"], total_steps, step["loss"])
    bar.close()

    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:  # each process saw its own micro-batches; a row two saw (an
        gathered, first_visit = gather_object(list(first_visit.items())), {}  # epoch's wrap-around) keeps one visit
        for i, score in gathered:
            first_visit.setdefault(i, score)
    first_scores = [first_visit[i] for i in sorted(first_visit)]
    visited = [units[i] for i in sorted(first_visit)]
    flagged = flagged_tokens(first_scores, visited, tokenizer)
    if accelerator.is_main_process:
        save_adapter(accelerator.unwrap_model(model), out_dir, tokenizer, parent, base_model)
    return TrainResult(out_dir, metrics, flagged, first_scores, rows, dropped, accelerator.is_main_process,
                       trained_pairs, detection(first_scores, visited), accelerator.num_processes,
                       accelerator.process_index)


def cut_micro_batch(model: torch.nn.Module, rows: list[TokenRow], config: CutConfig,
                    pad_id: int) -> tuple[torch.Tensor, dict[str, float], list[RowScore]]:
    """One micro-batch's CUT loss (the MLE baselines' too), the sums its step's metrics are made of,
    and each row's probabilities with the flags the loss used."""
    device = next(model.parameters()).device
    batch = collate(rows, pad_id).to(device)
    with autocast_for(device, config.precision):
        logp_aligned, logp_misaligned = response_logprobs(model, batch, config.logit_chunk_tokens)
    contrast = contrast_flags(logp_aligned, logp_misaligned, batch.mask, batch.negative, config.lam)
    out = cut_loss(logp_aligned, logp_misaligned, batch.mask, batch.negative, config.lam, config.alpha, config.reduction,
                   flagged=detected(config.detection, contrast, batch), unflagged_mle=config.unflagged == "mle",
                   flag_weights=None if config.detection == "contrast" else batch.blame_weights)
    sums = {
        "loss": out.loss.item(),
        "l1": out.l1.item(),
        "l2": out.l2.item(),
        "flagged": int(out.flagged.sum()),
        "negative_tokens": int((batch.mask & batch.negative.unsqueeze(1)).sum()),
        "tokens": batch.n_tokens,
    }
    return out.loss, sums, row_scores(batch.rows, logp_aligned, logp_misaligned, out.flagged, contrast)


def detected(detection: str, contrast: torch.Tensor, batch: Batch) -> torch.Tensor:
    """bool [B, T]: the tokens the unlikelihood term pushes down under `cut.detection` (a row whose judgment
    located no span keeps its contrast flags under `spans`)."""
    if detection == "contrast":
        return contrast
    if detection == "spans":
        return torch.where(batch.has_spans.unsqueeze(1), batch.blamed, contrast)
    return contrast | batch.blamed


def cut_step_metrics(sums: dict[str, float], micro_batches: int) -> dict[str, float]:
    """An optimizer step's metrics from its micro-batches' sums (losses are their means, as the gradient's)."""
    return {
        "loss": sums["loss"] / micro_batches,
        "l1": sums["l1"] / micro_batches,
        "l2": sums["l2"] / micro_batches,
        "flagged_frac": sums["flagged"] / max(sums["negative_tokens"], 1),
    }


def summed_over_processes(sums: Counter[str], accelerator: Accelerator) -> Counter[str]:
    """A step's sums over the micro-batches of every process, so each reports the whole step's metrics."""
    if accelerator.num_processes == 1:
        return sums
    keys = sorted(sums)
    local = torch.tensor([float(sums[key]) for key in keys], dtype=torch.float64, device=accelerator.device)
    return Counter(dict(zip(keys, accelerator.reduce(local, reduction="sum").tolist())))


def own_micro_batches(batches: list, step_index: int, grad_accum: int, accelerator: Accelerator) -> list:
    """This process's `grad_accum` micro-batches of an optimizer step. Every process gets as many,
    wrapping around to the epoch's first batches at its end, since DDP needs each to take part."""
    first = (step_index * accelerator.num_processes + accelerator.process_index) * grad_accum
    if accelerator.num_processes == 1:
        return batches[first : first + grad_accum]
    return [batches[(first + offset) % len(batches)] for offset in range(grad_accum)]
