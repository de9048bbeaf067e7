"""What every step of a round needs: the run's config and store, its adapters, the checked attach.

Every step first asks the store whether it is already done (its seconds are recorded in
`rounds`) and writes its results and its "done" mark in one transaction, so a run killed
anywhere and started again continues from the first unfinished step without duplicating a
sample, a judgment or an adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from online_cut.config import Config
from rounds import lineage
from samplers.base import AdapterCheck, Sampler
from storage import records
from storage.store import Store

Progress = Callable[[int, int], None]
"""Told (done, total) as a step's items finish."""


@dataclass
class RunContext:
    """What every step of one alignment run needs."""

    config: Config
    run: str
    store: Store
    base_model: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_model = self.config.model.name_or_path()

    def state(self, round: int) -> records.RoundState:
        state = self.store.round_state(self.run, round)
        if state is None:
            raise RuntimeError(f"run {self.run!r} round {round} was never started")
        return state

    def adapter(self, adapter_id: str | None) -> records.Adapter | None:
        if adapter_id is None:
            return None
        return next(a for a in self.store.adapters(self.run) if a.adapter_id == adapter_id)

    def live_adapter(self) -> records.Adapter | None:
        """The adapter the next round samples from (None: the base model)."""
        return lineage.live_adapter(self.store, self.run)

    def adapter_dir(self, round: int) -> Path:
        """Where round `round`'s candidate adapter is written."""
        return self.config.storage.adapters_dir / self.run / f"round-{round}"


def start_round(ctx: RunContext, round: int) -> records.RoundState:
    """Open round `round` on the live adapter, or return its state if it was opened before."""
    state = ctx.store.round_state(ctx.run, round)
    if state is None:
        live = ctx.live_adapter()
        ctx.store.start_round(ctx.run, round, adapter_in=live.adapter_id if live else None)
        state = ctx.state(round)
    return state


def attach(sampler: Sampler, adapter: records.Adapter | None) -> AdapterCheck | None:
    """Attach the adapter, checked against the fingerprint the store holds for it (a folder
    overwritten by another round's adapter fails); None for the base model."""
    if adapter is None:
        sampler.attach(None)
        return None
    return sampler.attach(Path(adapter.path), name=adapter.adapter_id, expect_change=True,
                          fingerprint=lineage.stored_fingerprint(adapter))


def stored_check(ctx: RunContext, round: int, step: str, check: AdapterCheck) -> records.AdapterCheck:
    """The store's row for the proof that `step` sampled from the adapter it names."""
    found = check.fingerprint
    figures = {} if found is None else dict(
        fingerprint_max_abs=found.adapter.max_abs, fingerprint_mean_abs=found.adapter.mean_abs,
        fingerprint_tokens=found.adapter.tokens, tolerance_mean_abs=found.tolerance, verdict=found.verdict,
        parent_mean_abs=found.parent and found.parent.mean_abs, position=found.position,
        parent_on_engine=found.parent_on_engine, separation=found.separation,
        noise_mean_abs=found.noise.mean_abs, noise_rms=found.noise.rms, noise_measured=found.noise_measured,
    )
    return records.AdapterCheck(
        run=ctx.run, round=round, step=step, adapter_id=check.adapter, backend=check.backend,
        precision=check.precision, differing_outputs=check.differing_outputs, max_logprob_diff=check.max_logprob_diff,
        **figures,
    )
