"""The tree keeps the layers of docs/architecture.md: imports point down only, Prefect stays in flows/ and tasks/."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from online_cut.logs import PROJECT_LOGGERS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("formats", "samplers", "judges", "cut", "storage", "online_cut", "rounds", "tasks", "flows")
ABOVE_LEAVES = ("online_cut", "rounds", "tasks", "flows")
# package: the top-level modules it must not import, and why
FORBIDDEN = {
    "formats": (tuple(p for p in PACKAGES if p != "formats"), "formats/ is the bottom layer"),
    "samplers": ((*ABOVE_LEAVES, "storage"), "a leaf package that samples, wherever the samples are stored"),
    "judges": (ABOVE_LEAVES, "a leaf package"),
    "storage": (ABOVE_LEAVES, "a leaf package"),
    "cut": ((*ABOVE_LEAVES, "storage"), "a leaf package that trains on triples, wherever they are stored"),
    "rounds": (("tasks", "flows"), "the round is plain code, below its Prefect tasks"),
    "tasks": (("flows",), "tasks are below the flows that call them"),
}
PREFECT_ALLOWED = ("flows", "tasks")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in the source, inside functions too; relative imports are not used here."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import under `root`'s packages that breaks a rule, as `file:line: message`."""
    problems = []
    for package in PACKAGES:
        forbidden, why = FORBIDDEN.get(package, ((), ""))
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            for line, module in imported_modules(path.read_text()):
                top = module.split(".")[0]
                if top in forbidden:
                    problems.append(f"{where}:{line}: imports {module} ({package}/ is {why})")
                if top == "prefect" and package not in PREFECT_ALLOWED:
                    problems.append(f"{where}:{line}: imports {module} (Prefect only in flows/ and tasks/)")
    return problems


def test_imports_point_down_the_layers_and_prefect_stays_in_flows_and_tasks() -> None:
    assert layer_violations(REPO) == []


def test_the_check_finds_an_import_up_the_layers_even_inside_a_function(tmp_path: Path) -> None:
    for package, body in (("cut", "def f():\n    from storage.store import Store\n"),
                          ("judges", "import online_cut.base_model\n"),
                          ("rounds", "from prefect import task\n")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "module.py").write_text(body)
    assert layer_violations(tmp_path) == [
        "judges/module.py:1: imports online_cut.base_model (judges/ is a leaf package)",
        "cut/module.py:2: imports storage.store (cut/ is a leaf package that trains on triples, wherever they are stored)",
        "rounds/module.py:1: imports prefect (Prefect only in flows/ and tasks/)",
    ]


def test_deployments_forward_the_project_loggers_the_flows_raise() -> None:
    env = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["job_variables"]["env"]
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",") == [*PROJECT_LOGGERS, "vllm"]


def test_every_package_is_installed_and_in_the_readme_layout() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    readme = (REPO / "README.md").read_text()
    for package in PACKAGES:
        assert f'"{package}"' in pyproject, f"{package}/ is not in pyproject.toml's packages"
        assert f"`{package}/`" in readme, f"{package}/ is not in README.md's layout table"


def test_the_tests_mirror_the_packages() -> None:
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - {"support", "bench"} <= set(PACKAGES), f"test folders that are no package: {folders - set(PACKAGES)}"
    assert not [p.name for p in (REPO / "tests").glob("test_*.py") if p.name != "test_layout.py"]


def test_no_flow_module_is_named_like_a_package() -> None:
    """Prefect loads a deployment's flow file with its folder on sys.path: a flows/online_cut.py was then
    imported as `online_cut` by flows/step.py, and the worker could not load the step."""
    assert not {p.stem for p in (REPO / "flows").glob("*.py")} & set(PACKAGES)


def test_the_scaling_switch_table_cites_tests_that_exist() -> None:
    """docs/scaling.md says which test runs each switch: every test it names is there."""
    import re

    table = (REPO / "docs" / "scaling.md").read_text().split("## Every switch, and where it runs", 1)[1].split("\n## ", 1)[0]
    cited = []
    for row in table.splitlines()[4:]:
        module = None
        for reference in re.findall(r"`((?:tests/\S+?\.py)?(?:::\w+)?)`", row):
            path, _, name = reference.partition("::")
            module = path or module
            cited.append((module, name))
    assert len(cited) >= 15
    for module, name in cited:
        source = (REPO / module).read_text()
        assert not name or f"def {name}(" in source, f"docs/scaling.md cites {module}::{name}, which does not exist"
