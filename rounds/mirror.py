"""A finished round's Parquet export and candidate adapter, copied to `storage.mirror` for other machines."""

from __future__ import annotations

import logging

from rounds.context import RunContext
from storage.exporter import export_folder
from storage.remote_folders import join, put_folder

log = logging.getLogger(__name__)


def mirror_round(ctx: RunContext, round: int) -> None:
    """Copy the round's Parquet export and candidate adapter to `storage.mirror`, where other machines read them."""
    mirror = ctx.config.storage.mirror
    if mirror is None:
        return
    export = ctx.config.storage.exports_dir / export_folder(ctx.run, round)
    if export.is_dir():
        put_folder(export, join(mirror, "exports", export_folder(ctx.run, round).as_posix()))
    candidate = ctx.adapter_dir(round)
    if candidate.is_dir():
        put_folder(candidate, join(mirror, "adapters", ctx.run, f"round-{round}"))
    log.info("round %d: export and adapter copied to %s", round, mirror)
