"""Hyper-parameters of one training step of a round. Defaults are the official CUT repository's (wwxu21/CUT)
except where a field's description names the official value: micro_batch_size (8 rows a forward pass
here, where the official script takes 1 and the `example` reduction reproduces its weighting) and the
settings the paper's code has no counterpart for (detection, unflagged, truncated, the baselines')."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from cut.machines import read_machines
from formats.strict_model import ExistingFile, StrictModel


class LoraConfig(StrictModel):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r); the official script's 16")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="module names that get LoRA weights",
    )


class SeverityWeights(StrictModel):
    """How hard the unlikelihood term pushes on the tokens of a span of each severity (formats/spans.py)."""

    minor: float = Field(1.0, ge=0, description="multiplies α on the tokens of a minor span")
    major: float = Field(1.0, ge=0, description="multiplies α on the tokens of a major span")
    critical: float = Field(1.0, ge=0, description="multiplies α on the tokens of a critical span")


class TemplatesConfig(StrictModel):
    """User-message texts of the contexts (and of ilf's refine request); the model's chat template wraps them."""

    instruction: str = Field("{instruction}", description="Align-P context x (and the default Misalign context)")
    judged: str = Field(
        "{instruction}\n\nWrite a response to the instruction above that matches this judgment of it:\n{judgment}",
        description="context [x, j]: Align-N rows with j-, fake-positive Misalign rows and hindsight rows",
    )
    positive_judgment: str = Field(
        "The response is correct, helpful and complete.",
        description="j+: the fake positive judgment (misalign_context fake_positive; hindsight rows of positives; "
        "forward's judgment of a positive the judge said nothing about)",
    )
    forward: str = Field(
        "{instruction}\n\nA response to the instruction above:\n{response}\n\nJudge this response.",
        description="context [x, y] of forward's second row, which predicts the judgment j",
    )
    refine: str = Field(
        # The shipped 135M model answers the instruction best when it comes last (tried on the addition suite).
        "Feedback on your previous response ({response}): {judgment}\n\nUse the feedback. {instruction}",
        description="ilf's request [x, y, j-] → y*: the model refines a negative's response given its judgment",
    )

    @model_validator(mode="after")
    def _placeholders_present(self) -> TemplatesConfig:
        for name, needed in [
            ("instruction", ["{instruction}"]),
            ("judged", ["{instruction}", "{judgment}"]),
            ("forward", ["{instruction}", "{response}"]),
            ("refine", ["{instruction}", "{response}", "{judgment}"]),
        ]:
            missing = [p for p in needed if p not in getattr(self, name)]
            if missing:
                raise ValueError(f"templates.{name} lacks {', '.join(missing)}")
        return self


class DpoConfig(StrictModel):
    beta: float = Field(0.1, gt=0, description="β of the sigmoid DPO loss: how far the policy may move from the reference")


Objective = Literal["cut", "sft", "hindsight", "dpo", "forward", "ilf"]
Reduction = Literal["token", "example"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
OBJECTIVE_SUMMARIES: dict[str, str] = {
    "cut": "the paper's objective: MLE on x for positives and on [x, j-] for negatives; under the Misalign context "
    "(x by default) unlikelihood on the tokens j- makes likelier (λ, α), MLE on the rest",
    "sft": "MLE on x for the positives only: what the verdicts alone teach",
    "hindsight": "MLE on [x, j] for every response: the judgment as a prompt prefix, no unlikelihood",
    "dpo": "sigmoid DPO on pairs of the same prompt's samples (chosen by judge score where both have one, else "
    "by verdict) against the round's input adapter: the judgment reduced to a reward",
    "forward": "MLE on y given x, then on the judgment given [x, y]: the model learns to predict the judgment "
    "of a response (forward prediction)",
    "ilf": "the model refines each negative's response given its judgment, the judge keeps the refinements it calls "
    "positive; MLE on x for those and the positives (imitation learning from language feedback)",
}


class CutConfig(StrictModel):
    objective: Objective = Field(
        "cut",
        description="; ".join(f"{name}: {summary}" for name, summary in OBJECTIVE_SUMMARIES.items()),
    )
    reduction: Reduction = Field(
        "token",
        description="how CUT weighs tokens: token means over the batch, or per-row means averaged over rows "
        "with an Align-N row's loss (L1 + L2) / 2 (example: what the official wwxu21/CUT code does)",
    )
    lam: float = Field(1.1, ge=1, description="λ: a token is flagged when p(y_t|x,j-) > λ·p(y_t|x,j+)")
    lam_by_round: list[Annotated[float, Field(ge=1)]] | None = Field(
        None, min_length=1, description="λ of round r in place of lam: the r-th value, the last for later rounds "
        "(e.g. [1.5, 1.3, 1.1] lowers it round by round)",
    )
    alpha: float = Field(1.0, ge=0, description="α: weight of the unlikelihood term on flagged tokens")
    detection: Literal["contrast", "spans", "union"] = Field(
        "contrast",
        description="which tokens of a negative response are flagged for the unlikelihood term: contrast, the paper's "
        "p(y_t|x,j-) > λ·p(y_t|Misalign context); spans, the tokens of the parts the judge blamed (formats/spans.py), "
        "contrast for a response whose judgment locates none; union, either",
    )
    severity_weights: SeverityWeights = Field(
        default_factory=SeverityWeights,
        description="with detection spans or union: α times this weight on a span token (the largest of its spans'; a "
        "span without severity, and a token flagged by contrast alone, weigh 1); all 1, the default, weighs none",
    )
    unflagged: Literal["mle", "none"] = Field(
        "mle", description="what a negative's unflagged tokens get under the Misalign context: MLE (the paper), or nothing",
    )
    truncated: Literal["train", "drop"] = Field(
        "train",
        description="responses the sampler cut off at max_tokens: trained without an end-of-sequence token (train), "
        "or left out (drop)",
    )
    misalign_context: Literal["instruction", "fake_positive"] = Field(
        "instruction", description="context of the Misalign rows: the bare instruction or a fake positive judgment"
    )
    positive_ratio: float | None = Field(
        0.25, ge=0, description="keep at most this many positives per negative (None: keep all)"
    )
    negative_ratio: float | None = Field(
        None, ge=0, description="keep at most this many negatives per positive (None, or no positive at all: keep all)"
    )
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig)
    learning_rate: float = Field(4e-4, gt=0, description="AdamW peak learning rate")
    epochs: int = Field(1, ge=1, description="passes over the round's rows")
    micro_batch_size: int = Field(8, ge=1, description="rows (dpo: pairs) per forward pass (the official script: 1)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps with linear warm-up")
    max_grad_norm: float = Field(1.0, gt=0, description="clip the gradient norm to this before each optimizer step")
    max_length: int = Field(512, ge=16, description="prompt + response tokens; prompts are cut from the left")
    length_window: int = Field(
        16, ge=1, description="sort rows by length within windows of this many micro-batches (less padding)"
    )
    logit_chunk_tokens: int = Field(
        1024, ge=1, description="response tokens per LM-head chunk; logits are recomputed in backward, never kept"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="autocast dtype of the forward pass; auto: bfloat16 on a GPU that supports it, else float32"
    )
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    launcher: Literal["in-process", "accelerate"] = Field(
        "in-process",
        description="in-process: the flow's process trains; accelerate: `accelerate launch` runs "
        "`online-cut train` on `processes` processes (one per GPU, DDP)",
    )
    processes: int = Field(1, ge=1, description="training processes for launcher accelerate (over every machine)")
    accelerate_config: ExistingFile | None = Field(
        None,
        description="launcher accelerate on several machines: an accelerate config file (`accelerate config` writes "
        "it; num_machines, machine_rank, main_process_ip, main_process_port, num_processes = processes), one per "
        "machine at this path (cut/machines.py)",
    )
    seed: int = Field(42, description="seed for sampling rows, LoRA init and dropout")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)

    def for_round(self, round: int) -> CutConfig:
        """The settings round `round` trains with: its λ from `lam_by_round`, when set."""
        if self.lam_by_round is None:
            return self
        return self.model_copy(update={"lam": self.lam_by_round[min(round, len(self.lam_by_round)) - 1],
                                       "lam_by_round": None})

    @model_validator(mode="after")
    def _processes_need_accelerate(self) -> CutConfig:
        if self.processes > 1 and self.launcher != "accelerate":
            raise ValueError("processes > 1 needs launcher: accelerate")
        if self.accelerate_config is not None:
            if self.launcher != "accelerate":
                raise ValueError("accelerate_config needs launcher: accelerate")
            machines = read_machines(self.accelerate_config)
            if machines.num_processes != self.processes:
                raise ValueError(f"processes is {self.processes}, but accelerate_config {self.accelerate_config} "
                                 f"starts num_processes {machines.num_processes}: make them agree")
        return self
