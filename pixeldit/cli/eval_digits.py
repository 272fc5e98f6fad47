"""`pixeldit-bench eval digits`: prompt-following accuracy of generated digits (thin: parse, call, print)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from evaluators.digits import evaluate_prompt_following
from pixeldit.infra.datasets import DatasetError
from pixeldit.infra.files import write_json_atomic

console = Console()
errors = Console(stderr=True)


def eval_digits(
    samples: Annotated[Path, typer.Argument(help="samples.npz from `pixeldit-bench t2i generate --prompts digits`.")],
    dataset: Annotated[Path, typer.Option(help="Prepared digits32 (train split fits the classifier).")] = Path("results/data/digits32"),
    out: Annotated[Optional[Path], typer.Option(help="Result JSON (default: <SAMPLES>-digits.json).")] = None,
) -> None:
    """Score how often a generated digit is the digit its prompt asked for, with a classifier of real digits.

    Reports the classifier's accuracy on the real held-out digits too: the ceiling for a perfect generator.

    [b]Examples[/b]
      pixeldit-bench eval digits results/samples/t2i-demo/samples.npz --dataset results/data/digits32
    """

    try:
        record = evaluate_prompt_following(samples, dataset)
    except (OSError, ValueError, KeyError, DatasetError) as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(code=1)
    out = out or samples.with_name(samples.stem + "-digits.json")
    write_json_atomic(out, record)
    console.print_json(json.dumps(record["values"]))
    console.print(f"wrote {out}")
