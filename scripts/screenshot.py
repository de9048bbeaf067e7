"""Screenshot a finished online-cut run in the Prefect UI, for the README.

    .venv/bin/python scripts/screenshot.py [--run NAME] [--out docs/images]

Needs a running Prefect server (PREFECT_API_URL, e.g. after `make demo`) and Debian's
`chromium` package. Takes the newest completed `online-cut` flow run unless --run names its
store run; writes a PNG of the run page and of round 1's table, round 1's flagged tokens and the metrics plot.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter, ArtifactCollectionFilterKey, FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterStateType,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1600,1000", "--virtual-time-budget=15000",
]


async def newest_run(run_name: str | None) -> tuple[str, str]:
    """The flow run id and its store run name (the flow's `run` parameter or its own name)."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["online-cut"])),
            flow_run_filter=FlowRunFilter(state=dict(type=FlowRunFilterStateType(any_=["COMPLETED"]))),
            sort=FlowRunSort.START_TIME_DESC,
        )
    for run in runs:
        name = run.parameters.get("run") or run.name
        if run_name in (None, name):
            return str(run.id), name
    raise SystemExit(f"no completed online-cut flow run{f' for run {run_name!r}' if run_name else ''} on {PREFECT_API_URL.value()}")


def artifact_pictures(run: str) -> dict[str, str]:
    """Artifact key → picture file: round 1's table, its flagged tokens, the metrics plot."""
    key = run.lower()
    return {f"{key}-round-1": "round-table.png", f"{key}-flagged-1": "flagged-tokens.png", f"{key}-metrics": "metrics.png"}


async def latest_artifact_id(key: str) -> str:
    async with get_client() as client:
        found = await client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key])))
    if not found:
        raise SystemExit(f"no artifact {key!r} on {PREFECT_API_URL.value()}")
    return str(found[0].latest_id)


def screenshot(url: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir=/tmp/online-cut-chromium",
                    f"--screenshot={out}", url], check=True, capture_output=True)
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="the store run name (default: the newest completed run)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    flow_run_id, run = asyncio.run(newest_run(args.run))
    ui = PREFECT_API_URL.value().removesuffix("/api")
    screenshot(f"{ui}/runs/flow-run/{flow_run_id}", args.out / "run.png")
    for key, picture in artifact_pictures(run).items():
        artifact_id = asyncio.run(latest_artifact_id(key))
        screenshot(f"{ui}/artifacts/artifact/{artifact_id}", args.out / picture)


if __name__ == "__main__":
    main()
