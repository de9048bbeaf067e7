"""How `make test`'s workers (pytest-xdist, `-n N`) share the suite: each test is a unit of work on
its own, except the modules that use the session's vLLM engines (tests/conftest.py), which one
worker runs, so each engine starts once. Being the largest unit, they are handed out first; then
the integration and end-to-end tests, so that the unit tests, seconds each, fill the last minutes.

xdist's own `--dist loadgroup` groups by a suffix it writes into node ids; pytest 9 builds node ids
from their parts and the suffix is lost, so every grouped test ran wherever it was sent.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

ENGINE_MODULES = frozenset({
    "tests/judges/test_judge_critic.py",
    "tests/online_cut/test_base_model.py",
    "tests/rounds/test_ilf.py",
    "tests/samplers/test_sampler_vllm.py",
})
ENGINE_FIXTURES = frozenset({"shipped_merged_engine", "shipped_vllm_server"})


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class EngineModulesOnOneWorker(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        return "the session's engines" if _module(nodeid) in ENGINE_MODULES else nodeid


def unlisted_engine_modules(items) -> list[str]:
    """Modules with a test on the session's engines that ENGINE_MODULES does not list."""
    return sorted({_module(item.nodeid) for item in items if ENGINE_FIXTURES & set(item.fixturenames)} - ENGINE_MODULES)


def slow_tiers_first(item) -> bool:
    """Sort key: the integration and end-to-end tests before the unit tests."""
    return item.get_closest_marker("integration") is None and item.get_closest_marker("e2e") is None
