"""The one interface every back-end implements, and the proof that an attached adapter is in use.

A flow run opens one sampler (one engine) and, each round, attaches that round's adapter and
samples:

    with open_sampler(config.sampler, base_model) as sampler:
        for round_index, adapter in rounds:
            check = sampler.attach(adapter, name=f"round-{round_index}")   # raises if not applied
            samples = sampler.sample(prompts)
            sampler.pause()                                             # before training

`attach` runs two checks. A fixed probe (a few prompts, greedy, with the generated tokens'
log-probs) is compared with the base model's probe, recorded once on the first attach: an
adapter that is expected to change the model but leaves the probe identical — never loaded,
loaded under a stale name, or all-zero weights passed as "trained" — raises
AdapterNotAppliedError. Then the adapter's fingerprint (`cut.fingerprint`: log-probs of fixed
tokens under the model the trainer wrote) is scored by the engine: a distance above the
engine's noise (`FINGERPRINT_TOLERANCES`) — another round's adapter, a bad merge, prefix-cache
blocks from the old weights — raises AdapterMismatchError. Either way the round does not
silently sample from weights other than the ones trained.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path

from cut.fingerprint import Fingerprint, FingerprintDistance, ProbeSequence, distance, read_fingerprint
from samplers.adapters import AdapterInfo, inspect_adapter
from samplers.config import SamplerConfig
from samplers.records import Prompt, Sample, SamplingSettings

log = logging.getLogger(__name__)

PROBE_PROMPTS = (
    Prompt("What is 23 + 58? Reply with just the number."),
    Prompt("Name three colours."),
    Prompt("Write one sentence about the sea."),
    Prompt("Explain what a verb is."),
)
PROBE_SETTINGS = SamplingSettings(n=1, temperature=0.0, max_tokens=8)
# Log-prob differences below this are numerical noise, not an adapter's effect.
LOGPROB_TOLERANCE = 1e-3


class SamplerError(RuntimeError):
    """The sampler cannot do what was asked; the message says why and what to change."""


class AdapterNotAppliedError(SamplerError):
    """An adapter expected to change the model left its outputs identical to the base model's."""


class AdapterMismatchError(SamplerError):
    """The engine's scores of the fingerprint's probe tokens are farther from the trainer's than its noise."""


@dataclass(frozen=True)
class Tolerance:
    """The largest fingerprint distance an engine's numerical noise explains."""

    max_abs: float
    mean_abs: float


# About twice the noise measured against float32 training (bench/sample.py prints it per
# back-end): float32 engines differ by kernel order only (transformers 0, vLLM's CPU engine
# under 2e-3); bfloat16 rounds weights and activations (vLLM merged max 0.17, mean 0.032; vLLM
# LoRA 0.16, 0.036; transformers 0.20, 0.039). Two random adapters of the tests differ by
# 1.1, 0.19. float16 keeps more mantissa bits than bfloat16 and shares its tolerance.
FINGERPRINT_TOLERANCES = {
    "float32": Tolerance(max_abs=2e-3, mean_abs=5e-4),
    "half": Tolerance(max_abs=0.4, mean_abs=0.08),
}


@dataclass(frozen=True)
class AdapterCheck:
    """The probe's verdict on one attach, stored with the round."""

    adapter: str | None
    backend: str
    precision: str
    changed: bool
    expected_change: bool
    adapter_weights_zero: bool
    probe_prompts: int
    differing_outputs: int
    max_logprob_diff: float
    # Distance of the engine's scores from the adapter's fingerprint; None without one (base model,
    # an adapter written without it).
    fingerprint: FingerprintDistance | None = None
    tolerance: Tolerance | None = None


def precision_of(dtype: str) -> str:
    """float32, or half for bfloat16 and float16 engines."""
    return "float32" if dtype in ("float32", "float") else "half"


class Sampler(ABC):
    """Samples responses from the base model plus at most one attached LoRA adapter."""

    backend: str
    # The key of the engine's tolerance in FINGERPRINT_TOLERANCES (`precision_of` its dtype).
    precision: str = "half"

    def __init__(self, config: SamplerConfig, base_model: str, reason: str = "") -> None:
        self.config = config
        self.base_model = base_model
        self.reason = reason or f"backend {self.backend} chosen in the config"
        self.adapter: str | None = None
        self._base_probe: list[Sample] | None = None
        # Every attach gets a fresh version: engines cache adapters by name and id.
        self._versions = itertools.count(1)

    def attach(
        self,
        adapter: Path | None,
        name: str | None = None,
        *,
        expect_change: bool = True,
        fingerprint: Fingerprint | None = None,
    ) -> AdapterCheck:
        """Make `adapter` (a PEFT LoRA folder; None: the bare base model) the one `sample` uses.

        With `expect_change` (a trained adapter), raises AdapterNotAppliedError when the probe
        shows no difference from the base model or the adapter's weights are all zero.
        Raises AdapterMismatchError when the engine's scores are farther from `fingerprint` (the
        one the store holds for the adapter expected; default: the one in the folder) than
        its noise. `name` is what samples record as their adapter.
        """
        if self._base_probe is None:
            self._base_probe = self._probe()
        if adapter is None:
            self._activate(None, None, 0)
            self.adapter = None
            return self._check(None, None, expect_change=False)
        info = inspect_adapter(adapter)
        name = name or Path(adapter).name
        version = next(self._versions)
        self._activate(info, f"{name}-v{version}", version)
        self.adapter = name
        check = self._check(name, info, expect_change)
        expected = fingerprint or read_fingerprint(adapter)
        if expected is None:
            log.warning("adapter %r (%s) has no fingerprint: only its change from the base model is checked", name, adapter)
            return check
        return self.check_fingerprint(check, expected)

    def check_fingerprint(self, check: AdapterCheck, expected: Fingerprint) -> AdapterCheck:
        """`check` with the distance of the engine's probe scores from `expected`; raises above tolerance."""
        measured = distance(expected, self._score_probe(expected.sequences))
        tolerance = FINGERPRINT_TOLERANCES[self.precision]
        check = replace(check, fingerprint=measured, tolerance=tolerance)
        log.info("adapter %r fingerprint: max |Δ log p| %.2e, mean %.2e over %d tokens (%s tolerance %.0e, %.0e)",
                 check.adapter, measured.max_abs, measured.mean_abs, measured.tokens, self.precision,
                 tolerance.max_abs, tolerance.mean_abs)
        if measured.max_abs > tolerance.max_abs or measured.mean_abs > tolerance.mean_abs:
            raise AdapterMismatchError(
                f"adapter {check.adapter!r}: backend {self.backend} scores the fingerprint's probe tokens "
                f"max |Δ log p| = {measured.max_abs:.3g}, mean {measured.mean_abs:.3g} away from the log-probs the "
                f"trainer wrote, above the {self.precision} tolerance ({tolerance.max_abs:g}, {tolerance.mean_abs:g}) "
                "that rounding explains: the engine is not serving the weights this adapter was trained to "
                "(another round's adapter, a stale cache or a bad merge)"
            )
        return check

    def sample(self, prompts: list[Prompt], settings: SamplingSettings | None = None) -> list[Sample]:
        """`settings.n` samples per prompt from the attached adapter, in prompt order."""
        if not prompts:
            return []
        return self._generate(prompts, settings or SamplingSettings.from_config(self.config), logprobs=False)

    def pause(self) -> None:
        """Called while the trainer runs; `between_rounds` in the config says what to free."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine and remove temporary files."""

    @abstractmethod
    def _activate(self, adapter: AdapterInfo | None, engine_name: str | None, version: int) -> None:
        """Route the next generations through `adapter` (None: the base model)."""

    @abstractmethod
    def _generate(self, prompts: list[Prompt], settings: SamplingSettings, logprobs: bool) -> list[Sample]:
        """Samples in prompt order, `settings.n` per prompt; `logprobs` fills `token_logprobs`."""

    @abstractmethod
    def _score_probe(self, sequences: tuple[ProbeSequence, ...]) -> list[list[float]]:
        """Per sequence, log p of each response token under the attached adapter (prompt log-probs)."""

    def _probe(self) -> list[Sample]:
        return self._generate(list(PROBE_PROMPTS), PROBE_SETTINGS, logprobs=True)

    def _check(self, name: str | None, info: AdapterInfo | None, expect_change: bool) -> AdapterCheck:
        probe = self._probe()
        differing = sum(a.text != b.text for a, b in zip(probe, self._base_probe))
        max_diff = max(
            (abs(x - y) for a, b in zip(probe, self._base_probe) for x, y in zip(a.token_logprobs, b.token_logprobs)),
            default=0.0,
        )
        check = AdapterCheck(
            adapter=name,
            backend=self.backend,
            precision=self.precision,
            changed=differing > 0 or max_diff > LOGPROB_TOLERANCE,
            expected_change=expect_change,
            adapter_weights_zero=info is not None and info.is_zero,
            probe_prompts=len(probe),
            differing_outputs=differing,
            max_logprob_diff=max_diff,
        )
        log.info("adapter check: %s", check)
        if expect_change and (check.adapter_weights_zero or not check.changed):
            problem = (
                "cannot change the model: its lora_B weights are all zero (untrained, or saved before training)"
                if check.adapter_weights_zero
                else f"left the probe identical to the base model although its weights are non-zero: "
                f"backend {self.backend} did not apply it"
            )
            raise AdapterNotAppliedError(f"adapter {name!r} ({info.path}) {problem}")
        return check

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
