"""`pixeldit-bench latent ...`: the latent baseline's autoencoder, latent cache, rFID reconstructions and compute.

Thin: parse, call `pixeldit.models.autoencoder`, `pixeldit.data.latent_cache`, `pixeldit.train_autoencoder`
and `pixeldit.compute`, print. Mounted by `pixeldit/cli/main.py` as the `latent` group. The latent model itself
trains with `pixeldit-bench train` (preset `digits32-latent-s1`) and samples with `pixeldit-bench sample`, like a
pixel model.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from pixeldit.cli.console import console, exits_on, fail
from pixeldit.compute import compare_presets
from pixeldit.data import open_dataset
from pixeldit.data.latent_cache import cache_latents
from pixeldit.infra.devices import resolve_device
from pixeldit.models.autoencoder import load_autoencoder, reconstruct
from pixeldit.train_autoencoder import AUTOENCODER_PRESETS, AutoencoderTrainConfig, train_autoencoder

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="Latent baselines: train the small autoencoder, cache latents, reconstruct for rFID, "
                       "compare compute.")


def _device(device: str | None) -> str:
    return str(resolve_device(device))


@app.command("train-ae")
def train_ae(
    dataset: Annotated[Path, typer.Argument(help="Prepared dataset directory (its train split is used).")],
    out: Annotated[Path, typer.Option(help="Autoencoder directory (training state and autoencoder.safetensors).")],
    kimg: Annotated[Optional[float], typer.Option(help="Training budget in thousands of images (default: the preset's).")] = None,
    preset: Annotated[str, typer.Option(help="Autoencoder preset (architecture and optimiser settings).")] = "digits32-ae",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved settings and exit.")] = False,
) -> None:
    """Train (or resume) a small KL autoencoder; rerunning the same command resumes, a larger --kimg continues.

    [b]Examples[/b]
      pixeldit-bench latent train-ae results/data/digits32 --out results/latent/digits32-ae
      pixeldit-bench latent train-ae results/data/digits32 --out /tmp/ae --kimg 1 --dry-run
    """
    if preset not in AUTOENCODER_PRESETS:
        raise fail(f"unknown autoencoder preset {preset!r}; known: {', '.join(AUTOENCODER_PRESETS)}")
    settings = {**AUTOENCODER_PRESETS[preset], **({"kimg": kimg} if kimg is not None else {})}
    with exits_on(ValueError, FileNotFoundError):
        config = AutoencoderTrainConfig(**settings)
        images = open_dataset(dataset, split="train")
        if dry_run:
            console.print_json(json.dumps({"dataset": str(dataset), "images": len(images), "out": str(out),
                                           "preset": preset, "steps": config.total_steps,
                                           **dataclasses.asdict(config)}))
            return
        path = train_autoencoder(images, out, **settings)
    console.print(f"autoencoder: {path}")


@app.command("cache")
def cache(
    dataset: Annotated[Path, typer.Argument(help="Prepared dataset directory.")],
    ae: Annotated[str, typer.Option(help="Autoencoder directory or file, or 'sd-vae-ft-ema'.")],
    out: Annotated[Path, typer.Option(help="Latent cache directory.")],
    split: Annotated[str, typer.Option(help="Dataset split to encode.")] = "train",
    batch_size: Annotated[int, typer.Option(help="Images per encoder pass.")] = 64,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda if present, else cpu).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the inputs, print the plan and exit.")] = False,
) -> None:
    """Encode a dataset split once into a latent cache (one posterior sample per image) for latent training.

    Rerunning the same command resumes a killed job at its first missing shard; a cache of another
    autoencoder or dataset is refused, never mixed.

    [b]Examples[/b]
      pixeldit-bench latent cache results/data/digits32 --ae results/latent/digits32-ae --out results/latent/digits32-train
      pixeldit-bench latent cache data/imagenet256 --ae sd-vae-ft-ema --out data/imagenet256-sdvae --dry-run
    """
    with exits_on(ValueError, FileNotFoundError):
        images = open_dataset(dataset, split=split)
        autoencoder = load_autoencoder(ae, _device(device))
        if dry_run:
            console.print_json(json.dumps({"dataset": str(dataset), "split": split, "images": len(images),
                                           "autoencoder": autoencoder.name, "out": str(out),
                                           "latent_shape": list(autoencoder.latent_shape(images.resolution))}))
            return
        path = cache_latents(images, split, autoencoder, out, batch_size=batch_size)
    console.print(f"latent cache: {path}")


@app.command("reconstruct")
def reconstruct_command(
    dataset: Annotated[Path, typer.Argument(help="Prepared dataset directory.")],
    ae: Annotated[str, typer.Option(help="Autoencoder directory or file, or 'sd-vae-ft-ema'.")],
    out: Annotated[Path, typer.Option(help="Output .npz (arr_0 uint8 NHWC images, arr_1 labels).")],
    split: Annotated[str, typer.Option(help="Dataset split to reconstruct.")] = "reference",
    batch_size: Annotated[int, typer.Option(help="Images per encoder/decoder pass.")] = 64,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda if present, else cpu).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the inputs, print the plan and exit.")] = False,
) -> None:
    """Encode -> decode a split (posterior mean) into an ADM-style .npz: score it with `eval imagenet` for rFID.

    [b]Examples[/b]
      pixeldit-bench latent reconstruct results/data/digits32 --ae results/latent/digits32-ae --out results/latent/recon.npz
    """
    if out.suffix != ".npz":
        raise fail(f"--out must be a .npz file, got {out}")
    with exits_on(ValueError, FileNotFoundError):
        images = open_dataset(dataset, split=split)
        autoencoder = load_autoencoder(ae, _device(device))
        if dry_run:
            console.print_json(json.dumps({"dataset": str(dataset), "split": split, "images": len(images),
                                           "autoencoder": autoencoder.name, "out": str(out)}))
            return
        reconstruct(autoencoder, images, batch_size=batch_size, out=out)
    console.print(f"reconstructions: {out}")


@app.command("compute")
def compute(
    pixel_preset: Annotated[str, typer.Option(help="Pixel-space training preset.")] = "digits32-s4",
    latent_preset: Annotated[str, typer.Option(help="Latent training preset.")] = "digits32-latent-s1",
    sampler: Annotated[str, typer.Option(help="Sampler preset or key for the sampling FLOPs.")] = "ab2-50-cfg",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Training and per-image sampling FLOPs of a pixel and a latent preset, and the latent kimg of equal training compute.

    [b]Examples[/b]
      pixeldit-bench latent compute --pixel-preset digits32-s4 --latent-preset digits32-latent-s1
      pixeldit-bench latent compute --sampler euler-50 --json
    """
    with exits_on(KeyError, ValueError, TypeError):
        result = compare_presets(pixel_preset, latent_preset, sampler)
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table(title=f"compute at {result['resolution']}px (2 FLOPs per multiply-add; sampler {sampler})")
    for column in ("preset", "model", "kimg", "training FLOPs", "sampling GFLOPs / image"):
        table.add_column(column, justify="left" if column in ("preset", "model") else "right",
                         no_wrap=column in ("preset", "model"))
    for side in ("pixel", "latent"):
        row = result[side]
        table.add_row(row["preset"], row["model"], f"{row['kimg']:g}", f"{row['training_flops']:.3e}",
                      f"{row['sampling_flops_per_image'] / 1e9:.2f}")
    console.print(table)
    console.print(f"matched latent budget: {result['matched_kimg']:.2f} kimg "
                  f"(the training compute of {pixel_preset}; {latent_preset} trains {result['latent']['kimg']:g} kimg)")
