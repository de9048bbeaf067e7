"""The `online-cut` command: every verb answers --help without loading heavy libraries."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from online_cut.cli import app

runner = CliRunner()


def verbs(group: typer.Typer = app, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI, e.g. ('model', 'prepare')."""
    command = typer.main.get_command(group)
    found = []

    def walk(cmd, path):
        subcommands = getattr(cmd, "commands", None)
        if subcommands is None:
            found.append(path)
            return
        for name, sub in subcommands.items():
            walk(sub, (*path, name))

    walk(command, prefix)
    return found


def test_top_level_help_lists_the_verbs() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("model", "config"):
        assert verb in result.output


@pytest.mark.parametrize("path", verbs(), ids=" ".join)
def test_every_verb_has_help(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_console_script_is_installed_and_fast_to_answer() -> None:
    """`online-cut --help` must not import torch/vllm: heavy imports live inside the verbs."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "online-cut"
    probe = "import sys, runpy; sys.argv=['online-cut','--help']\ntry:\n runpy.run_path(%r, run_name='__main__')\nexcept SystemExit: pass\nprint('HEAVY' if {'torch','vllm','transformers'} & set(sys.modules) else 'LIGHT')" % str(script)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "Commands" in result.stdout
    assert result.stdout.strip().endswith("LIGHT")
