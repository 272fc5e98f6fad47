"""`pixeldit-bench`: one Typer app over every stage (thin: parse, call library code, print).

`--help` lists the groups in the order of the workflow: data, train, sample, eval, report, then the utilities.
Exit codes: 0 success, 1 bad input, 2 usage (Typer's own), 3 a check failed, 4 a required external file is
missing or fails its checksum, 5 `compare`'s caveat (see `pixeldit.cli.console`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from evaluators.registry import EVALUATOR_PACKAGES, evaluate, load_task
from pixeldit.cli import ref, weights
from pixeldit.cli.compare import compare_command
from pixeldit.cli.console import (
    EXIT_CODES_HELP,
    console,
    debug_requested,
    default_command_group,
    exits_on,
    fail,
    print_error,
    unhandled_error,
)
from pixeldit.cli.data import app as data_app
from pixeldit.cli.eval_digits import eval_digits
from pixeldit.cli.eval_dpg import dpg_app, eval_dpg
from pixeldit.cli.eval_geneval import geneval_app
from pixeldit.cli.eval_imagenet import eval_imagenet
from pixeldit.cli.inventory import list_results, list_runs, list_samples
from pixeldit.cli.latent import app as latent_app
from pixeldit.cli.report import baselines_app, report
from pixeldit.cli.sample import app as sampling_app
from pixeldit.cli.t2i import app as t2i_app
from pixeldit.models import models_in
from pixeldit.models.flops import count_flops, count_params
from pixeldit.presets import TRAINING_PRESETS
from pixeldit.train import TrainConfig, train

# The stages in the order one runs them, then the utilities; `--help` lists commands in this order.
WORKFLOW_ORDER = ("data", "train", "latent", "sample", "t2i", "eval", "compare", "report", "models", "weights", "ref", "ls",
                  "baselines")


class _WorkflowOrderGroup(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        unlisted = len(WORKFLOW_ORDER)   # a command missing from WORKFLOW_ORDER is listed last, not hidden
        return sorted(self.commands, key=lambda name: WORKFLOW_ORDER.index(name) if name in WORKFLOW_ORDER
                      else unlisted)


app = typer.Typer(cls=_WorkflowOrderGroup, no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="Train, sample, evaluate and report PixelDiT and baselines with the papers' protocols.",
                  epilog=EXIT_CODES_HELP)


@app.callback()
def root_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error "
                                                          "(also PIXELDIT_DEBUG=1).")] = False,
) -> None:
    if debug:
        os.environ["PIXELDIT_DEBUG"] = "1"


eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                       help="Score images with a benchmark's protocol: `eval BENCHMARK INPUT --out FILE`; each "
                            "benchmark's helpers sit under it (`eval imagenet ref build`, `eval dpg check`).")


@app.command("models")
def models_command(
    resolution: Annotated[list[int], typer.Option("--res", help="Resolutions for the GFLOPs columns.")] = [256, 512],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the model registry with parameters and GFLOPs (2 FLOPs per multiply-add, as the paper).

    [b]Examples[/b]
      pixeldit-bench models
      pixeldit-bench models --res 32 --json
    """
    rows = []
    for name, config in models_in("pixeldit").items():
        row = {"name": name, "patch_depth": config.patch_depth, "pixel_depth": config.pixel_depth,
               "hidden_size": config.hidden_size, "heads": config.num_heads, "patch_size": config.patch_size,
               "params": count_params(config)}
        for res in resolution:
            row[f"gflops@{res}"] = round(count_flops(config, res) / 1e9, 2) if res % config.patch_size == 0 else None
        rows.append(row)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="PixelDiT registry (GFLOPs per forward pass, 2 FLOPs per multiply-add)")
    headers = {"name": "model", "patch_depth": "N", "pixel_depth": "M", "hidden_size": "D", "heads": "heads",
               "patch_size": "p", "params": "params"}
    for column in rows[0]:
        table.add_column(headers.get(column, column.replace("gflops@", "GFLOPs@")),
                         justify="left" if column == "name" else "right")
    for row in rows:
        cells = [f"{v / 1e6:.2f}M" if k == "params" else "-" if v is None else str(v) for k, v in row.items()]
        table.add_row(*cells)
    console.print(table)


def _parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings -> dict, values parsed as JSON where they parse (numbers, lists, null, true)."""
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise fail(f"--set expects key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


@app.command("train")
def train_command(
    preset: Annotated[str, typer.Argument(help="Training preset, e.g. digits32-s4, imagenet256-xl (see --list).")] = "",
    kimg: Annotated[Optional[int], typer.Option("--kimg", help="Training budget in thousands of images (overrides the preset).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default results/runs/<preset>-<seed>).")] = None,
    seed: Annotated[int, typer.Option(help="Run seed (part of the run name).")] = 0,
    dataset: Annotated[Optional[str], typer.Option(help="Prepared dataset directory (overrides the preset).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override any TrainConfig field: --set lr=2e-4 --set ablation=vanilla-dit")] = None,
    list_presets: Annotated[bool, typer.Option("--list", help="List the presets and exit.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Train (or resume) a model; rerunning the same command continues from the newest training state.

    Under torchrun every process runs this command; rank 0 writes the run directory.

    [b]Examples[/b]
      pixeldit-bench data prepare digits32 --out results/data/digits32
      pixeldit-bench train digits32-s4
      pixeldit-bench train digits32-s4 --set ablation=vanilla-dit --out results/runs/vanilla-0
      torchrun --standalone --nproc_per_node 8 -m pixeldit.cli -- train imagenet256-xl --dataset data/imagenet256
    """
    if list_presets or not preset:
        for name, values in TRAINING_PRESETS.items():
            typer.echo(f"{name:44s} {values['model']:16s} {values['total_kimg']:>8} kimg  {values['dataset']}")
        return
    values = _parse_overrides(overrides or [])
    values.update({k: v for k, v in (("total_kimg", kimg), ("dataset", dataset)) if v is not None})
    with exits_on(KeyError, ValueError, TypeError):
        config = TrainConfig.from_preset(preset, seed=seed, **values)
    run_dir = out or Path("results/runs") / config.run_name()
    if dry_run:
        console.print_json(json.dumps({"run_dir": str(run_dir), **dataclasses.asdict(config)}))
        return
    with exits_on(FileNotFoundError, ValueError):
        snapshot = train(config, run_dir)
    console.print(f"final snapshot: {snapshot}")


@app.command("ls")
def ls_command(
    results: Annotated[Path, typer.Option(help="Results folder.")] = Path("results"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """List runs (progress, snapshots), sample sets and result files with their status.

    [b]Examples[/b]
      pixeldit-bench ls
      pixeldit-bench ls --results /scratch/me/results --json
    """
    if not results.is_dir():
        raise fail(f"{results} is not a folder; pass --results")
    sections = {"runs": list_runs(results), "samples": list_samples(results), "results": list_results(results)}
    if as_json:
        console.print_json(json.dumps(sections))
        return
    for title, rows in sections.items():
        if not rows:
            console.print(f"[dim]no {title} under {results}[/]")
            continue
        table = Table(title=title)
        for column in rows[0]:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(value) for value in row.values()))
        console.print(table)


def _benchmark_group(name: str, title: str, score, helpers: Optional[typer.Typer] = None) -> typer.Typer:
    """`eval NAME INPUT ...` scores (the `score` command); `eval NAME HELPER ...` runs one of `helpers`' commands."""
    group = typer.Typer(cls=default_command_group("score"), no_args_is_help=True, rich_markup_mode="rich",
                        add_completion=False, help=f"{title}. `eval {name} INPUT ...` is short for "
                                                   f"`eval {name} score INPUT ...`.")
    group.command("score")(score)
    if helpers is not None:
        group.registered_commands.extend(helpers.registered_commands)
    return group


imagenet_app = _benchmark_group("imagenet", "ImageNet metrics (FID, sFID, IS, precision/recall) and "
                                "their reference sets", eval_imagenet)
imagenet_app.add_typer(ref.app, name="ref")      # the same group as `pixeldit-bench ref`
eval_app.add_typer(imagenet_app, name="imagenet")
eval_app.add_typer(geneval_app, name="geneval")
eval_app.add_typer(_benchmark_group("dpg", "DPG-Bench: score grids with VQA, check a folder, "
                                                   "inspect the questions", eval_dpg, helpers=dpg_app), name="dpg")
eval_app.command("digits")(eval_digits)


def _mount_registered_evaluators() -> None:
    """`eval <name> INPUTS --out FILE [--option key=value]` for every registered benchmark without a command of
    its own: adding a benchmark takes its package and one line in evaluators/registry.py, nothing here."""
    mounted = {command.name for command in eval_app.registered_commands} | {
        group.name for group in eval_app.registered_groups}
    for name in EVALUATOR_PACKAGES:
        if name not in mounted:
            eval_app.command(name, help=load_task(name)["description"])(_generic_evaluation(name))


def _generic_evaluation(name: str):
    def command(inputs: list[Path], out: Path, option: list[str] = [], dry_run: bool = False) -> None:
        missing = [str(path) for path in inputs if not path.exists()]
        if missing:
            raise fail(f"input {', '.join(missing)} does not exist")
        bad = [item for item in option if "=" not in item]
        if bad:
            raise fail(f"--option takes key=value, got {bad}")
        options = dict(item.split("=", 1) for item in option)
        if dry_run:
            console.print(f"would evaluate {name} (task version {load_task(name)['version']}) on "
                          f"{', '.join(map(str, inputs))} with {options or 'no options'} and write {out}")
            return
        with exits_on(FileNotFoundError, ValueError, TypeError):
            record = evaluate(name, inputs, out, **options)
        console.print(f"wrote {out}: {record['values']}")

    # Set here, not written as annotations: under `from __future__ import annotations` those would be strings
    # that cannot see this function's `name`.
    command.__annotations__ = {
        "inputs": Annotated[list[Path], typer.Argument(help=load_task(name)["inputs"])],
        "out": Annotated[Path, typer.Option("--out", help="The result JSON to write.")],
        "option": Annotated[list[str], typer.Option("--option", help="key=value passed to the evaluator.")],
        "dry_run": Annotated[bool, typer.Option("--dry-run", help="Check the inputs; write nothing.")],
        "return": None}
    return command


_mount_registered_evaluators()


app.add_typer(data_app, name="data", help="Prepare datasets (ADM centre crop) and inspect them.")
app.add_typer(latent_app, name="latent",
              help="Latent baselines: autoencoder, latent cache, rFID reconstructions, compute.")
app.add_typer(sampling_app, name="sample", help="Sample images (seeded, sharded, resumable) into ADM's samples.npz.")
app.add_typer(t2i_app, name="t2i", help="Text-to-image: generate GenEval / DPG / digits prompt sets.")
app.add_typer(eval_app, name="eval")
app.command("compare")(compare_command)
app.command("report")(report)
app.add_typer(weights.app, name="weights")
app.add_typer(ref.app, name="ref")
app.add_typer(baselines_app, name="baselines", help="Published numbers of baselines, with their sources.")


def main(args: list[str] | None = None) -> None:
    """The `pixeldit-bench` entry point: the app, with one message and exit code for any error a command did
    not turn into one itself (never a traceback, unless --debug asks for it)."""
    try:
        app(args=args, prog_name="pixeldit-bench")
    except Exception as error:
        if debug_requested():
            raise
        message, code = unhandled_error(error)
        print_error(message)
        sys.exit(code)
