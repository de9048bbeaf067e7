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
tokens under the model the trainer wrote, its parent and the base, all float32) is scored by
the engine. The engine's own noise is measured, not assumed: while it still serves the base
model, it scores the first fingerprint's tokens against the base model's float32 log-probs.
Scores farther from the adapter's than a few times that noise, or nearer the parent's end of
the line from the parent's log-probs to the adapter's (measured from this engine's own scores of
the parent where it served the parent before; `cut.fingerprint.match`) — another round's
adapter, a bad merge, prefix-cache blocks from the old weights — raise AdapterMismatchError. An
adapter too close to its parent to tell apart in the engine's precision passes as
`indistinguishable`, and says so (docs/adapter-check.md).
Either way the round does not silently sample from weights other than the ones trained.
"""

from __future__ import annotations

import itertools
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path

from cut.fingerprint import (
    Fingerprint,
    FingerprintDistance,
    FingerprintMatch,
    LogProbs,
    ProbeSequence,
    distance,
    match,
    read_fingerprint,
)
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
    """The engine's scores of the fingerprint's probe tokens are not the adapter's; `found` holds the figures."""

    def __init__(self, message: str, found: FingerprintMatch | None = None) -> None:  # None: unpickled
        super().__init__(message)
        self.found = found


# The noise an engine is taken to have where it cannot be measured (a fingerprint written before the
# base model's log-probs were recorded), as mean |Δ log p| against float32 training (bench/sample.py):
# float32 engines differ by kernel order only (transformers 0, vLLM's CPU engine under 2e-4);
# bfloat16 rounds weights and activations (0.033 on the shipped model: docs/adapter-check.md). The
# root mean square is taken as for Gaussian noise, √(π/2) times the mean.
ASSUMED_NOISE = {"float32": 2.5e-4, "half": 0.04}
# A float32 engine can score the probe exactly as the trainer did; noise is never taken below this.
NOISE_FLOOR = 1e-4


def _floored_noise(mean_abs: float, rms: float) -> FingerprintDistance:
    return FingerprintDistance(max_abs=0.0, mean_abs=max(mean_abs, NOISE_FLOOR), rms=max(rms, NOISE_FLOOR), tokens=0)


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
    # The engine's scores against the adapter's fingerprint; None without one (base model, an
    # adapter written without it).
    fingerprint: FingerprintMatch | None = None


def precision_of(dtype: str) -> str:
    """float32, or half for bfloat16 and float16 engines."""
    return "float32" if dtype in ("float32", "float") else "half"


class Sampler(ABC):
    """Samples responses from the base model plus at most one attached LoRA adapter."""

    backend: str
    # The key of the engine's noise in ASSUMED_NOISE (`precision_of` its dtype).
    precision: str = "half"

    def __init__(self, config: SamplerConfig, base_model: str, reason: str = "") -> None:
        self.config = config
        self.base_model = base_model
        self.reason = reason or f"backend {self.backend} chosen in the config"
        self.adapter: str | None = None
        self._base_probe: list[Sample] | None = None
        self._serving_base = True  # engines start on the bare base model
        self._noise: FingerprintDistance | None = None  # from the float32 base model, measured once
        # This engine's scores of the probe under each model it served and passed, by that model's float32
        # log-probs: a later adapter is placed against its parent as this engine scored it.
        self._served: dict[LogProbs, list[list[float]]] = {}
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
        Raises AdapterMismatchError when the engine's scores do not match `fingerprint` (the
        one the store holds for the adapter expected; default: the one in the folder).
        `name` is what samples record as their adapter.
        """
        if self._base_probe is None:
            self._base_probe = self._probe()
        if adapter is None:
            if not self._serving_base:  # a fresh engine serves the base model already (no reload before round 1)
                self._activate(None, None, 0)
            self._serving_base = True
            self.adapter = None
            return self._check(None, None, expect_change=False)
        info = inspect_adapter(adapter)
        name = name or Path(adapter).name
        expected = fingerprint or read_fingerprint(adapter)
        if expected is not None and expected.base_logprobs is not None and self._noise is None and self._serving_base:
            base_scores = self._score_probe(expected.sequences)
            measured = distance(expected.base_logprobs, base_scores)
            self._noise = _floored_noise(measured.mean_abs, measured.rms)
            self._served[expected.base_logprobs] = base_scores
            log.info("engine noise on the base model's probe: mean |Δ log p| %.2e, rms %.2e", measured.mean_abs,
                     measured.rms)
        version = next(self._versions)
        self._serving_base = False
        self._activate(info, f"{name}-v{version}", version)
        self.adapter = name
        check = self._check(name, info, expect_change)
        if expected is None:
            log.warning("adapter %r (%s) has no fingerprint: only its change from the base model is checked", name, adapter)
            return check
        return self.check_fingerprint(check, expected)

    def check_fingerprint(self, check: AdapterCheck, expected: Fingerprint) -> AdapterCheck:
        """`check` with the engine's probe scores matched against `expected`; raises on a mismatch."""
        if self._noise is not None:
            noise, noise_source = self._noise, "measured on the base model"
        else:
            assumed = ASSUMED_NOISE[self.precision]
            noise, noise_source = (_floored_noise(assumed, assumed * math.sqrt(math.pi / 2)),
                                   f"assumed for {self.precision}")
        scores = self._score_probe(expected.sequences)
        found = match(expected, scores, noise, noise_measured=self._noise is not None,
                      parent_scores=self._served.get(expected.parent_logprobs))
        check = replace(check, fingerprint=found)
        if found.verdict != "mismatch":
            self._served[expected.logprobs] = scores
        log.info("adapter %r fingerprint %s: mean |Δ log p| %.3g from the trainer's, %s; engine noise %.3g (%s)",
                 check.adapter, found.verdict, found.adapter.mean_abs, found.against_parent(), found.noise.mean_abs,
                 noise_source)
        if found.verdict == "indistinguishable":
            log.warning("adapter %r lies %.1f noise units from its parent on the probe, too few to tell the two "
                        "apart in this engine's precision: passed as indistinguishable", check.adapter, found.separation)
        if found.verdict == "mismatch":
            raise AdapterMismatchError(
                f"adapter {check.adapter!r}: backend {self.backend} scores the fingerprint's probe tokens mean "
                f"|Δ log p| = {found.adapter.mean_abs:.3g} (max {found.adapter.max_abs:.3g}) away from the log-probs "
                f"the trainer wrote, {found.against_parent()}, against the engine's own noise of "
                f"{found.noise.mean_abs:.3g} "
                f"({noise_source}; within {found.tolerance:.3g} and past halfway to the adapter's passes): the engine "
                "is not serving the weights this adapter was trained to (another round's adapter, a stale cache or "
                "a bad merge)",
                found,
            )
        return check

    def sample(self, prompts: list[Prompt], settings: SamplingSettings | None = None) -> list[Sample]:
        """`settings.n` samples per prompt from the attached adapter, in prompt order."""
        if not prompts:
            return []
        return self._generate(prompts, settings or SamplingSettings.from_config(self.config), logprobs=False)

    def pause(self) -> None:
        """Called while the trainer runs; `between_rounds` in the config says what to free."""

    def release(self) -> None:
        """Free the engine now, whatever `between_rounds` says (people may take hours to judge); the next
        attach or sample starts it again. The in-process vLLM samplers do; a server's engine is not this
        process's, and the transformers back-end (the CPU fallback) keeps its model."""

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
