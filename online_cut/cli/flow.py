"""`online-cut run` (the flow, directly) and `online-cut serve` (the deployment)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cut.config import OBJECTIVES  # light: pydantic only, so --help stays instant

from online_cut.cli.output import fail
from online_cut.logs import PROJECT_LOGGERS

CONFIG_HELP = "the run's YAML config, e.g. configs/quickstart.yaml"


def _prefect_settings() -> None:
    """Forward the project's logs to Prefect (terminal and UI), keep vLLM's to warnings, and give
    the temporary Prefect server time to start.

    Must run before Prefect and vLLM are imported: both read these at import time."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", ",".join((*PROJECT_LOGGERS, "vllm")))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # The temporary server `online-cut run` starts otherwise logs an ERROR per failed telemetry
    # send on machines without internet access.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # It is ready in about 10 s on 2 idle cores; Prefect's default of 20 s ran out on busy ones
    # and the run failed before its first step.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # `online-cut run` starts its engine before its flow run exists (flows/alignment.py run_here): those
    # lines are printed; Prefect would warn once per logger that it cannot send them to the UI.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _checked(config: Path) -> None:
    """Validate the config before Prefect or any engine starts."""
    from online_cut.config import ConfigError, load_config

    try:
        load_config(config)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _people_have_a_ui(config: Path) -> None:
    """People answer the round's forms in the Prefect UI, which the temporary server has not."""
    from flows.people import server_has_a_ui
    from online_cut.config import load_config

    if load_config(config).judge.by_people and not server_has_a_ui():
        raise fail("judge.kind human and review ask people in the Prefect UI, and the temporary server `online-cut "
                   "run` starts without PREFECT_API_URL has none: start one (`prefect server start`), set "
                   "PREFECT_API_URL=http://127.0.0.1:4200/api, and run again")


def _resume_checked(config: Path, run: str | None) -> None:
    """A run named again can continue from its store (rounds/resume.py), checked before Prefect or an engine starts."""
    from online_cut.config import load_config
    from rounds.resume import ResumeError, check_resume
    from storage.connection import StoreLocked
    from storage.store import Store

    settings = load_config(config)
    if run is None or not settings.storage.db.is_file():
        return
    try:
        check_resume(settings, run, Store.from_config(settings.storage))
    except (ResumeError, StoreLocked) as exc:
        raise fail(str(exc)) from None


def _pools_checked(config: Path) -> None:
    """The work pools the config places steps on exist on the Prefect server (after `_prefect_settings`)."""
    from online_cut.config import load_config
    from tasks.placement import PlacementError, check_pools

    try:
        check_pools(load_config(config).placement)
    except PlacementError as exc:
        raise fail(str(exc)) from None


def run(
    config: Path = typer.Option(Path("configs/quickstart.yaml"), "--config", help=CONFIG_HELP),
    rounds: int = typer.Option(None, min=1, help="rounds to run (default: the config's `rounds`)"),
    run_name: str = typer.Option(
        None, "--run", help="the alignment run's name in the store; give an earlier run's name to resume it"
    ),
) -> None:
    """Run the online-cut flow in this process (for scripts and tests); same flow as the deployment."""
    _checked(config)
    _resume_checked(config, run_name)
    _prefect_settings()
    _people_have_a_ui(config)
    _pools_checked(config)
    from flows.alignment import run_here

    typer.echo(run_here(config=str(config), rounds=rounds, run=run_name))


def serve(
    name: str = typer.Option("online-cut", help="deployment name: runs start with `prefect deployment run online-cut/NAME`"),
    config: Path = typer.Option(Path("configs/quickstart.yaml"), "--config", help=f"default config of the deployment: {CONFIG_HELP}"),
) -> None:
    """Register the `online-cut/online-cut` deployment and run its flow runs until stopped (Ctrl-C).

    Needs PREFECT_API_URL pointing at a Prefect server (`prefect server start`); start runs with
    `prefect deployment run online-cut/online-cut -p rounds=3 --watch`.
    """
    _checked(config)
    _prefect_settings()
    from flows.attempts import ensure_zombie_automation
    from flows.alignment import online_cut

    ensure_zombie_automation()  # a run killed and never resumed is marked Crashed when its heartbeats stop
    online_cut.serve(name=name, parameters={"config": str(config)})


def experiment(
    config: Path = typer.Option(Path("configs/experiment-arith.yaml"), "--config", help=CONFIG_HELP),
    name: str = typer.Option("arith", help="the experiment's name; its runs are NAME-shared and NAME-<objective> (NAME-<objective>-rK for repeat K)"),
    objectives: list[str] = typer.Option(
        None, "--objective", help=f"an objective to compare: {', '.join(OBJECTIVES)} (give it again for another; "
        "default: all of them)"
    ),
    results: Path = typer.Option(Path("docs/results.md"), help="markdown file for the table; the plot goes beside it (.png)"),
    repeats: int = typer.Option(
        1, "--repeats", min=1, help="run the whole comparison this many times, each from its own round-1 samples; "
        "the table shows mean ± standard error and CUT's paired difference to each baseline",
    ),
    arm_options: list[str] = typer.Option(
        None, "--arm", help="NAME=SETTINGS: compare named cut settings instead of objectives, SETTINGS a YAML mapping "
        "over the config's cut section, e.g. --arm 'lam-1.1={objective: cut, lam: 1.1}' (give it again for another; "
        "tune on a dev split: --dev)",
    ),
    dev: bool = typer.Option(
        False, "--dev", help="score on the suites' dev prompts of the training split (evaluation.split: dev), not "
        "the held-out split: for choosing settings",
    ),
) -> None:
    """Compare objectives online from the same round-1 samples and write a results table and plot.

    Rerun with the same --name (and --repeats) to continue an interrupted experiment.
    """
    _checked(config)
    from online_cut.config import load_config

    if load_config(config).judge.by_people:
        raise fail("an experiment compares objectives over many rounds and repeats: its judge must judge at once "
                   "(judge.kind rule, openai or local), not people")
    unknown = sorted(set(objectives or ()) - set(OBJECTIVES))
    if unknown:
        raise fail(f"--objective: unknown {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}")
    if arm_options and objectives:
        raise fail("give --objective or --arm, not both (an arm names its objective in its settings)")
    arms = _parsed_arms(config, arm_options) if arm_options else None
    _prefect_settings()
    _pools_checked(config)
    from flows.experiment import experiment as experiment_flow

    typer.echo(experiment_flow(config=str(config), name=name, objectives=objectives, results=str(results),
                               repeats=repeats, arms=arms, dev=dev))


def _parsed_arms(config: Path, options: list[str]) -> dict[str, dict]:
    """`--arm NAME=SETTINGS` options as {name: settings}, each checked over `config`; a bad one fails naming it."""
    import re

    import yaml

    from online_cut.config import ConfigError, load_config
    from rounds.experiment import arm_config

    arms = {}
    for option in options:
        name, equals, text = option.partition("=")
        name = name.strip()
        try:
            settings = yaml.safe_load(text) if equals else None
        except yaml.YAMLError as exc:
            raise fail(f"--arm {option!r}: SETTINGS is not YAML ({exc.problem})") from None
        if not name or not isinstance(settings, dict):
            raise fail(f"--arm {option!r}: expected NAME=SETTINGS, SETTINGS a mapping such as {{objective: cut, lam: 1.1}}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise fail(f"--arm {option!r}: NAME names runs and adapter folders: letters, digits, '.', '_', '-' only")
        if name in arms:
            raise fail(f"--arm {name!r} is given twice")
        try:
            arm_config(load_config(config), name, settings)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        arms[name] = settings
    return arms
