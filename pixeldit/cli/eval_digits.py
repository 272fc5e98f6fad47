"""`pixeldit-bench eval digits`: prompt-following accuracy of generated digits (thin: parse, call, print)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from evaluators.digits import plan_prompt_following
from evaluators.registry import evaluate
from pixeldit.cli.console import console, exits_on
from pixeldit.infra.datasets import DatasetError


def eval_digits(
    samples: Annotated[Path, typer.Argument(help="samples.npz from `pixeldit-bench t2i generate --prompts digits`.")],
    dataset: Annotated[Path, typer.Option(help="Prepared digits32 (train split fits the classifier).")] = Path("results/data/digits32"),
    out: Annotated[Optional[Path], typer.Option(help="Result JSON (default: <SAMPLES>-digits.json).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the inputs, print the plan, write nothing.")]
    = False,
) -> None:
    """Score how often a generated digit is the digit its prompt asked for, with a classifier of real digits.

    Reports the classifier's accuracy on the real held-out digits too: the ceiling for a perfect generator.

    [b]Examples[/b]
      pixeldit-bench eval digits results/samples/t2i-demo/samples.npz --dataset results/data/digits32
      pixeldit-bench eval digits results/samples/t2i-demo/samples.npz --dry-run
    """
    out = out or samples.with_name(samples.stem + "-digits.json")
    with exits_on(OSError, ValueError, KeyError, DatasetError):
        if dry_run:
            console.print_json(json.dumps({**plan_prompt_following(samples, dataset), "out": str(out)}))
            return
        record = evaluate("digits", [samples, dataset], out)
    console.print_json(json.dumps(record["values"]))
    console.print(f"wrote {out}")
