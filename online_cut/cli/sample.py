"""`online-cut sample`: responses to a file of instructions (or a built-in suite) from the base
model or an adapter, with the configured sampler, written as JSONL."""

from __future__ import annotations

from pathlib import Path

import typer

from online_cut.cli.output import fail


def sample(
    config: Path = typer.Option(..., "--config", help="a YAML config: its model and sampler sections are used"),
    out: Path = typer.Option(..., "--out", help="JSONL written with one record per sample"),
    prompts: Path = typer.Option(None, "--prompts", help="instructions: JSON/JSONL (CUT paper fields) or Parquet"),
    suite: str = typer.Option(None, "--suite", help="instead of --prompts: a built-in suite (addition, format)"),
    count: int = typer.Option(64, "--count", min=1, help="prompts drawn from --suite (training split)"),
    adapter: Path = typer.Option(None, "--adapter", help="a PEFT LoRA adapter folder (default: the base model)"),
) -> None:
    """Sample responses to every instruction and write them to OUT (written whole, at the end)."""
    from online_cut.config import ConfigError, load_config
    from samplers.adapters import AdapterError
    from samplers.base import SamplerError
    from online_cut.watchdog import guard_children
    from samplers.factory import open_sampler
    from formats.triple_file import write_records
    from samplers.prompts import PromptSourceError, read_prompt_file, suite_prompts

    if (prompts is None) == (suite is None):
        raise fail("give exactly one of --prompts FILE and --suite NAME")
    try:
        settings = load_config(config)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        instructions = read_prompt_file(prompts) if prompts else suite_prompts(suite, "train", count)
    except PromptSourceError as exc:
        raise fail(str(exc)) from None

    model = settings.model
    guard_children()  # the engine ends with this command, also when it is killed
    try:
        with open_sampler(
            settings.sampler, model.name_or_path(), dtype=model.dtype, max_model_len=model.max_model_len
        ) as sampler:
            typer.echo(f"sampler {sampler.backend}: {sampler.reason}", err=True)
            if adapter is not None:
                sampler.attach(adapter, name=adapter.name)
            samples = sampler.sample(instructions)
    except (AdapterError, SamplerError) as exc:
        raise fail(str(exc)) from None

    by_id = {prompt.prompt_id: prompt for prompt in instructions}
    lines = []
    for record in samples:
        prompt = by_id[record.prompt_id]
        # The fields `online-cut judge` reads, then the sample's own.
        line = {"instruction": prompt.instruction, "input": prompt.input, "response": record.text,
                "metadata": prompt.metadata, **record.as_record()}
        del line["text"]
        lines.append(line)
    write_records(out, lines, format="jsonl")
    typer.echo(f"{len(samples)} samples of {len(instructions)} prompts → {out}", err=True)
