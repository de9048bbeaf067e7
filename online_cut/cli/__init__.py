"""The `online-cut` command. Each verb imports its heavy dependencies only when it runs,
so `--help` stays instant."""

from __future__ import annotations

import typer

from online_cut.cli import detection, flow, judge, sample, train
from online_cut.cli.adapters import adapters_app
from online_cut.cli.annotate import annotate_app
from online_cut.cli.judges import judges_app
from online_cut.cli.setup import config_app, model_app
from online_cut.cli.store import store_app

app = typer.Typer(
    help="Align a language model with natural-language judgments (CUT), online, round after round.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(model_app, name="model")
app.add_typer(config_app, name="config")
app.add_typer(store_app)  # import, export, sql
app.add_typer(adapters_app, name="adapters")
app.add_typer(judges_app, name="judges")
app.add_typer(annotate_app, name="annotate")
app.command("judge")(judge.judge)
app.command("train")(train.train)
app.command("check-detection")(detection.check_detection)
app.command("run")(flow.run)
app.command("serve")(flow.serve)
app.command("experiment")(flow.experiment)
app.command("sample")(sample.sample)
