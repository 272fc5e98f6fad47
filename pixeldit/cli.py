"""`pixeldit-bench`: one Typer app over every stage (thin: parse, call library code, print).

Exit codes: 0 success, 1 bad input or a failed check (message on stderr), 2 usage error (Typer's own).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="Train, sample, evaluate and report PixelDiT and baselines with the papers' protocols.")
weights_app = typer.Typer(no_args_is_help=True, help="The registry of external files: list, fetch, verify, import.")
app.add_typer(weights_app, name="weights")
console = Console()
errors = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print an error and return the exit to raise (code 1: bad input or failed check)."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=1)


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
    from pixeldit.models import PixelDiT_models
    from pixeldit.models.flops import count_flops, count_params

    rows = []
    for name, config in PixelDiT_models.items():
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
    from pixeldit import weights

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
    from pixeldit import weights

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
    from pixeldit import weights

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


def _load_weight_registrations() -> None:
    """Import the modules that register external files, so `weights` sees the whole registry."""
    import importlib

    for module in ("evaluators.imagenet", "evaluators.geneval", "evaluators.dpg"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a real missing dependency, not an absent evaluator
                raise


if __name__ == "__main__":
    app()
