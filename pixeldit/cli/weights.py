"""`pixeldit-bench weights ...`: the registry of external files, and importing released checkpoints.

`weights import c2i` converts a class-conditional NVlabs/PixelDiT checkpoint, `weights import t2i` the
text-to-image release; both write this project's network format.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from pixeldit.cli.console import console, exits_on
from pixeldit.infra import weights
from pixeldit.models.io import save_network
from pixeldit.models.official import import_official_checkpoint
from pixeldit.models.t2i_official import load_t2i_checkpoint

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="The registry of external files (list, fetch, verify) and importing released checkpoints.")
import_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                         help="Convert a released checkpoint into this project's network format: c2i or t2i.")
app.add_typer(import_app, name="import")

# Modules that register external files when imported; an evaluator package may be absent from an install.
_REGISTERING_MODULES = ("pixeldit.repa", "pixeldit.text_encoders", "pixeldit.models.autoencoder",
                        "evaluators.imagenet", "evaluators.imagenet.clip", "evaluators.geneval", "evaluators.dpg")
TrustPickleOption = Annotated[bool, typer.Option("--trust-pickle",
                                                 help="Allow a full pickle load (runs code from the file!).")]


def _load_weight_registrations() -> None:
    """Import the modules that register external files, so `weights` sees the whole registry."""
    for module in _REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a real missing dependency, not an absent evaluator
                raise


@app.command("list")
def weights_list() -> None:
    """Show every registered external file, where it goes and whether it is present.

    [b]Examples[/b]
      pixeldit-bench weights list
    """
    _load_weight_registrations()
    table = Table(title=f"external files (folder: {weights.weights_dir()})")
    for column in ("name", "file", "present", "licence", "url"):
        table.add_column(column)
    for name, entry in sorted(weights.WEIGHTS.items()):
        present = "yes" if weights.path_of(name).is_file() else "no"
        table.add_row(name, entry.filename, present, entry.licence, entry.url)
    console.print(table)


@app.command("fetch")
def weights_fetch(
    names: Annotated[list[str], typer.Argument(help="Registry names, see `weights list`.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be downloaded and where.")] = False,
) -> None:
    """Download registered files and verify their checksums (needs a network connection).

    [b]Examples[/b]
      pixeldit-bench weights fetch inception
      pixeldit-bench weights fetch inception --dry-run
    """
    _load_weight_registrations()
    for name in names:
        with exits_on(KeyError):
            if dry_run:
                entry, path = weights.get_entry(name), weights.path_of(name)
                console.print(f"{name}: {'present at' if path.is_file() else 'would download ' + entry.url + ' to'} "
                              f"{path}", highlight=False)
                continue
            console.print(f"{name}: {weights.fetch(name)}")


@app.command("verify")
def weights_verify(
    names: Annotated[Optional[list[str]], typer.Argument(help="Names to check (default: all present).")] = None,
) -> None:
    """Check present files against the registry's checksums.

    [b]Examples[/b]
      pixeldit-bench weights verify
    """
    _load_weight_registrations()
    names = names or [name for name in sorted(weights.WEIGHTS) if weights.path_of(name).is_file()]
    for name in names:
        with exits_on(KeyError):
            console.print(f"{name}: ok ({weights.verify(name)})")


@import_app.command("c2i")
def import_c2i(
    checkpoint: Annotated[Path, typer.Argument(help="Released Lightning .ckpt (or a plain state_dict .pt).")],
    out: Annotated[Path, typer.Argument(help="Output .safetensors (its config is written beside it as .json).")],
    which: Annotated[str, typer.Option(help="'ema' (ema_denoiser.*, the released numbers) or 'online' "
                                            "(denoiser.*).")] = "ema",
    trust_pickle: TrustPickleOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be written and exit.")] = False,
) -> None:
    """Convert an NVlabs/PixelDiT class-conditional checkpoint into this project's network format.

    [b]Examples[/b]
      pixeldit-bench weights import c2i imagenet256_pixeldit_xl_epoch320.ckpt results/imported/xl-256-ep320.safetensors
    """
    with exits_on(OSError, ValueError, KeyError):
        config, written = import_official_checkpoint(checkpoint, out, which=which, trust_pickle=trust_pickle,
                                                     dry_run=dry_run)
    console.print(f"{'would write' if dry_run else 'wrote'} {written}: {config}")


@import_app.command("t2i")
def import_t2i(
    checkpoint: Annotated[Path, typer.Argument(help="Released pixeldit_t2i_v1.pth (or an FSDP .bin).")],
    out: Annotated[Path, typer.Argument(help="Output network .safetensors.")],
    resolution: Annotated[int, typer.Option(help="The resolution the weights generate at (1024 for the "
                                                 "release).")] = 1024,
    which: Annotated[str, typer.Option(help="'online' (state_dict, what upstream's inference samples with) "
                                            "or 'ema'.")] = "online",
    trust_pickle: TrustPickleOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and check the checkpoint; write nothing.")] = False,
) -> None:
    """Convert the released PixelDiT-T2I checkpoint (HF nvidia/PixelDiT-1300M-1024px) into a network file.

    [b]Examples[/b]
      pixeldit-bench weights import t2i checkpoints/pixeldit_t2i_v1.pth results/imported/pixeldit-t2i-1024.safetensors
    """
    with exits_on(OSError, ValueError, KeyError):
        model = load_t2i_checkpoint(checkpoint, trust_pickle=trust_pickle, which=which)
    if dry_run:
        console.print(f"would write {out}: {model.config}")
        return
    # Stored as `net`: these are the weights upstream samples with; generation uses `ema` only where a file has it.
    save_network(out, model.config, net=model.state_dict(),
                 metadata={"resolution": resolution, "text": {"encoder": "gemma-2-2b-it"},
                           "source": {"checkpoint": str(checkpoint), "weights": which}})
    console.print(f"wrote {out}: {model.config.name or 'PixelDiT-T2I'}")
