"""Shared fixtures: the shipped model (built by `make setup`) and a tiny random Llama."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


def _one_thread_per_worker() -> None:
    """Under `pytest -n N` (`make test`), each worker and what it starts (engines, servers, runs)
    computes on one thread and the kernel shares the cores among them. vLLM's CPU engine and torch
    spin OpenMP threads on every core they are given, and workers with more than one thread each
    would slow each other many times over. Runs before anything imports torch, which reads
    OMP_NUM_THREADS once. The engines' processes then wait for each other asleep rather than
    spinning on a core (tests/support/vllm_plugins/quiet_engine.py), the engines started by the
    runs the tests launch too."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"  # else vLLM binds a thread to each core
        plugins = str(REPO / "tests" / "support" / "vllm_plugins")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (plugins, os.environ.get("PYTHONPATH"))))
        sys.path.insert(0, plugins)  # what the engine processes this worker spawns start from


_one_thread_per_worker()

# The helpers in tests/support import as top-level modules, as they do when run as scripts.
sys.path.insert(0, str(REPO / "tests" / "support"))

from online_cut.base_model import is_prepared, shipped_model_dir  # noqa: E402
from engines import Opened, open_in_process  # noqa: E402
from prefect_server import running_prefect_server  # noqa: E402
from tiny_model import build_tiny_llama  # noqa: E402
from vllm_server import running_vllm_server  # noqa: E402
from worker_scheduling import EngineModulesOnOneWorker, slow_tiers_first, unlisted_engine_modules  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data" / "cut-paper"


def pytest_xdist_make_scheduler(config, log):
    """`-n N` alone (xdist's `--dist load`): group the engine modules; another `--dist` is xdist's."""
    return EngineModulesOnOneWorker(config, log) if config.getvalue("dist") == "load" else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unlisted = unlisted_engine_modules(items)
    if unlisted:
        raise pytest.UsageError(f"{', '.join(unlisted)} use the session's vLLM engines: add them to ENGINE_MODULES "
                                "in tests/support/worker_scheduling.py, so that one worker starts each engine once")
    if "PYTEST_XDIST_WORKER" in os.environ:  # workers hand out tests in this order
        items.sort(key=slow_tiers_first)


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The converted SmolLM2-135M-Instruct folder (make setup builds it)."""
    folder = shipped_model_dir()
    if not is_prepared(folder):
        pytest.fail(f"{folder} is not prepared: run `make setup` (or `online-cut model prepare`)")
    return folder


@pytest.fixture(scope="session")
def tiny_model(shipped_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with the shipped tokenizer: loads in a second, trains in milliseconds."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), shipped_model)


@pytest.fixture(scope="session")
def shipped_merged_engine(shipped_model: Path) -> Opened:
    """One vllm-merged sampler of the shipped model for every module that samples from it: each
    attach swaps the weights it serves, so a test starts from the adapter it attaches."""
    with open_in_process("vllm-merged", shipped_model) as opened:
        yield opened


@pytest.fixture(scope="session")
def shipped_vllm_server(shipped_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One vLLM OpenAI-compatible server of the shipped model (its base URL, …/v1) for the judge
    and sampler tests that need a real server: each start costs 30-40 s here."""
    with running_vllm_server(shipped_model, tmp_path_factory.mktemp("vllm-server") / "server.log") as base_url:
        yield base_url


@pytest.fixture(scope="session")
def cut_paper_iter1() -> Path:
    """1000 triples of the CUT paper's first online round (Apache-2.0, see shared/data)."""
    path = SHARED_DATA / "online-iter1.json"
    if not path.is_file():
        pytest.skip(f"needs the CUT paper's data at {path}: take online-iter1.json from the CUT repository's "
                    "data/iter/ (github.com/wwxu21/CUT) and put it there")
    return path


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory: pytest.TempPathFactory):
    """The environment that points Prefect clients at one real server shared by the session's tests
    (each starting its own, or a run its temporary one, cost 10-20 s a time); each pytest worker has its own. Tests keep their run
    names apart: a run's earlier attempts are looked up on the server by name."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env
