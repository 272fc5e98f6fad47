"""`pixeldit-bench`: one Typer app over every stage (thin: parse, call library code, print).

Exit codes (`pixeldit.cli.console`): 0 success, 1 bad input, 2 usage, 3 a failed check, 4 a missing external file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from evaluators.registry import EVALUATOR_PACKAGES, evaluate, load_task
from pixeldit.cli.console import EXIT_BAD_INPUT, EXIT_MISSING_FILE, console, fail
from pixeldit.infra.weights import ChecksumError, MissingWeightsError

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="Train, sample, evaluate and report PixelDiT and baselines with the papers' protocols.")
weights_app = typer.Typer(no_args_is_help=True, help="The registry of external files: list, fetch, verify, import.")
app.add_typer(weights_app, name="weights")
eval_app = typer.Typer(no_args_is_help=True, help="Score images with a benchmark's protocol (imagenet, geneval, dpg).")
app.add_typer(eval_app, name="eval")

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
    from pixeldit.models import models_in
    from pixeldit.models.flops import count_flops, count_params

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
        table.add_column(headers.get(column, column.replace("gflops@", "GFLOPs@")), justify="left" if column == "name" else "right")
    for row in rows:
        cells = [f"{v / 1e6:.2f}M" if k == "params" else "-" if v is None else str(v) for k, v in row.items()]
        table.add_row(*cells)
    console.print(table)


@weights_app.command("list")
def weights_list() -> None:
    """Show every registered external file, where it goes and whether it is present.

    [b]Examples[/b]
      pixeldit-bench weights list
    """
    from pixeldit.infra import weights

    _load_weight_registrations()
    table = Table(title=f"external files (folder: {weights.weights_dir()})")
    for column in ("name", "file", "present", "licence", "url"):
        table.add_column(column)
    for name, entry in sorted(weights.WEIGHTS.items()):
        table.add_row(name, entry.filename, "yes" if weights.path_of(name).is_file() else "no", entry.licence, entry.url)
    console.print(table)


@weights_app.command("fetch")
def weights_fetch(names: Annotated[list[str], typer.Argument(help="Registry names, see `weights list`.")]) -> None:
    """Download registered files and verify their checksums (needs a network connection).

    [b]Examples[/b]
      pixeldit-bench weights fetch inception
    """
    from pixeldit.infra import weights

    _load_weight_registrations()
    for name in names:
        try:
            console.print(f"{name}: {weights.fetch(name)}")
        except (KeyError, weights.MissingWeightsError, weights.ChecksumError) as error:
            raise fail(str(error).strip('"'))


@weights_app.command("verify")
def weights_verify(names: Annotated[Optional[list[str]], typer.Argument(help="Names to check (default: all present).")] = None) -> None:
    """Check present files against the registry's checksums.

    [b]Examples[/b]
      pixeldit-bench weights verify
    """
    from pixeldit.infra import weights

    _load_weight_registrations()
    names = names or [name for name in sorted(weights.WEIGHTS) if weights.path_of(name).is_file()]
    for name in names:
        try:
            console.print(f"{name}: ok ({weights.verify(name)})")
        except (KeyError, weights.MissingWeightsError, weights.ChecksumError) as error:
            raise fail(str(error).strip('"'))


@weights_app.command("import-official")
def weights_import_official(
    checkpoint: Annotated[Path, typer.Argument(help="Released Lightning .ckpt (or a plain state_dict .pt).")],
    out: Annotated[Path, typer.Argument(help="Output .safetensors (its config is written beside it as .json).")],
    which: Annotated[str, typer.Option(help="'ema' (ema_denoiser.*, the released numbers) or 'online' (denoiser.*).")] = "ema",
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow a full pickle load (runs code from the file!).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be written and exit.")] = False,
) -> None:
    """Convert an NVlabs/PixelDiT class-conditional checkpoint into this project's network format.

    [b]Examples[/b]
      pixeldit-bench weights import-official imagenet256_pixeldit_xl_epoch320.ckpt results/imported/pixeldit-xl-256-ep320.safetensors
    """
    from pixeldit.models.official import import_official_checkpoint

    try:
        config, written = import_official_checkpoint(checkpoint, out, which=which, trust_pickle=trust_pickle,
                                                     dry_run=dry_run)
    except (OSError, ValueError, KeyError) as error:
        raise fail(str(error))
    console.print(f"{'would write' if dry_run else 'wrote'} {written}: {config}")


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
      torchrun --standalone --nproc_per_node 8 -m pixeldit.cli train imagenet256-xl --dataset data/imagenet256
    """
    from pixeldit.presets import TRAINING_PRESETS
    from pixeldit.train import TrainConfig, train

    if list_presets or not preset:
        for name, values in TRAINING_PRESETS.items():
            typer.echo(f"{name:44s} {values['model']:16s} {values['total_kimg']:>8} kimg  {values['dataset']}")
        return
    values = _parse_overrides(overrides or [])
    values.update({k: v for k, v in (("total_kimg", kimg), ("dataset", dataset)) if v is not None})
    try:
        config = TrainConfig.from_preset(preset, seed=seed, **values)
    except (KeyError, ValueError, TypeError) as error:
        raise fail(str(error).strip('"'))
    run_dir = out or Path("results/runs") / config.run_name()
    if dry_run:
        import dataclasses
        console.print_json(json.dumps({"run_dir": str(run_dir), **dataclasses.asdict(config)}))
        return
    try:
        snapshot = train(config, run_dir)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error))
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
    from pixeldit.cli.inventory import list_results, list_runs, list_samples

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


def _mount_subcommands() -> None:
    """Sub-apps that live beside their library code."""
    from pixeldit.cli.data import app as data_app
    from pixeldit.cli.report import baselines_app, report

    app.add_typer(data_app, name="data", help="Prepare datasets (ADM centre crop) and inspect them.")
    app.command("report")(report)
    app.add_typer(baselines_app, name="baselines", help="Published numbers of baselines, with their sources.")

    from pixeldit.cli.sample import app as sampling_app

    app.add_typer(sampling_app, name="sample", help="Sample images (seeded, sharded, resumable) into ADM's samples.npz.")

    from pixeldit.cli.latent import app as latent_app

    app.add_typer(latent_app, name="latent", help="Latent baselines: autoencoder, latent cache, rFID reconstructions, compute.")

    from pixeldit.cli.eval_imagenet import eval_imagenet, ref_app

    eval_app.command("imagenet")(eval_imagenet)
    app.add_typer(ref_app, name="ref")

    from pixeldit.cli.eval_geneval import geneval_app

    eval_app.add_typer(geneval_app, name="geneval")

    from pixeldit.cli.t2i import app as t2i_app

    app.add_typer(t2i_app, name="t2i", help="Text-to-image: import the released checkpoint, generate GenEval / DPG / digits.")

    from pixeldit.cli.eval_digits import eval_digits

    eval_app.command("digits")(eval_digits)

    from pixeldit.cli.eval_dpg import dpg_app, eval_dpg

    eval_app.command("dpg")(eval_dpg)
    app.add_typer(dpg_app, name="dpg", help="DPG-Bench helpers: check an image folder, inspect the question CSV.")


_mount_subcommands()


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
        try:
            record = evaluate(name, inputs, out, **options)
        except (MissingWeightsError, ChecksumError) as error:
            raise fail(str(error).strip('"'), EXIT_MISSING_FILE)
        except (FileNotFoundError, ValueError, TypeError) as error:
            raise fail(str(error), EXIT_BAD_INPUT)
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


def _load_weight_registrations() -> None:
    """Import the modules that register external files, so `weights` sees the whole registry."""
    import importlib

    for module in ("pixeldit.repa", "pixeldit.text_encoders", "pixeldit.models.autoencoder",
                   "evaluators.imagenet", "evaluators.geneval", "evaluators.dpg"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a real missing dependency, not an absent evaluator
                raise

