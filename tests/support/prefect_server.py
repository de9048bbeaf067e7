"""A real Prefect server for end-to-end tests, on a free loopback port with its own home."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextmanager
def running_prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """Yields the environment (PREFECT_API_URL, PREFECT_HOME) under which clients reach it."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # On SQLite the server's trigger evaluator, every 5 s, holds the lock that creating an automation
        # waits for on the same event loop: the server then stopped answering (a test hung 7 minutes).
        # No test needs an automation to fire; tests/flows/test_flow.py checks the one `serve` creates.
        "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
        # The server's loops that no test needs, and its UI: each of the suite's servers otherwise
        # polls its database for schedules, late and paused runs, cancellations and worker health.
        # The task-run recorder, the event persister and the lease repossessor stay.
        **{f"PREFECT_SERVER_SERVICES_{service}_ENABLED": "false" for service in (
            "SCHEDULER", "LATE_RUNS", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP", "FOREMAN", "CLEANUP_RECONCILER")},
        "PREFECT_UI_ENABLED": "false",
    }
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until(lambda: _healthy(env["PREFECT_API_URL"]) or server.poll() is not None, 180, "the Prefect server")
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
