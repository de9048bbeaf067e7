"""Screenshot the form people judge in (`judge.kind: human`, docs/people.md), for the README.

    .venv/bin/python scripts/screenshot_form.py [--out docs/images/people-form.png]

Needs a running Prefect server with its UI (PREFECT_API_URL, e.g. after `make demo`), Debian's
`chromium` package and the `screenshot` extra (Playwright drives the browser: the form opens only
when "Resume" is clicked). Starts a one-round run of the shipped model judged by people, waits for
its first form, opens it in the UI, writes the picture, then ends the run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from prefect import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL

REPO = Path(__file__).resolve().parents[1]
RUN = "screenshot-people"


def people_config(folder: Path) -> Path:
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    config |= {
        "rounds": 1,
        "prompts": {**config["prompts"], "per_round": 2},
        "sampler": {**config.get("sampler", {}), "backend": "transformers", "n": 2},
        "judge": {"kind": "human", "people": {"page_size": 4, "poll_s": 1}},
        "storage": {"db": str(folder / "store.duckdb"), "adapters_dir": str(folder / "adapters"),
                    "exports_dir": str(folder / "exports")},
    }
    path = folder / "people.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def paused_round(started: float) -> str:
    """The id of the run's round once it is paused for its first form."""
    deadline = time.monotonic() + 600
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            rounds = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["online-cut-round"])),
                                           flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["round-1"])))
            for flow_run in rounds:
                if flow_run.state_type.value == "PAUSED" and flow_run.created.timestamp() >= started:
                    return str(flow_run.id)
            time.sleep(1)
    raise SystemExit("the run never paused for a form")


def screenshot_form(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.goto(url)
        page.get_by_role("button", name="Resume").first.click()
        page.get_by_text(f"Run {RUN}, round 1").wait_for()  # the form's description, fetched after its fields
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out))
        browser.close()
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images/people-form.png"))
    args = parser.parse_args()
    if not PREFECT_API_URL.value():
        raise SystemExit("set PREFECT_API_URL to a Prefect server with its UI (make demo leaves one)")
    with tempfile.TemporaryDirectory(prefix="online-cut-people-") as folder:
        started = time.time()
        run = subprocess.Popen([str(Path(sys.executable).parent / "online-cut"), "run", "--config",
                                str(people_config(Path(folder))), "--run", RUN], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            flow_run_id = paused_round(started)
            screenshot_form(f"{PREFECT_API_URL.value().removesuffix('/api')}/runs/flow-run/{flow_run_id}", args.out)
        finally:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait()


if __name__ == "__main__":
    main()
