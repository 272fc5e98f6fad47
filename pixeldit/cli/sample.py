"""`pixeldit-bench sample ...`: seeded, sharded, resumable sampling (thin: parse, call `pixeldit.sample`, print).

Mounted by `pixeldit/cli/main.py` as the `sample` group. The group runs its
`run` command when the first word is not a subcommand, so ``pixeldit-bench sample RUN --n 100`` and
``pixeldit-bench sample run RUN --n 100`` are the same.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from pixeldit.cli.console import console, default_command_group, exits_on, fail
from pixeldit.infra.devices import distributed_world
from pixeldit.infra.images import QUANTIZATIONS
from pixeldit.infra.shards import parse_shard_ids
from pixeldit.sample import check_shards, merge_shards, plan_sampling, sample_shards, seed_range_folders
from pixeldit.samplers import SAMPLER_PRESETS, get_sampler

app = typer.Typer(cls=default_command_group("run"), no_args_is_help=True, rich_markup_mode="rich",
                  add_completion=False,
                  help="Sample images into ADM-format .npz shards, resumably; merge them; list sampler presets.")


@app.command("run")
def sample_run(
    run_or_checkpoint: Annotated[Path, typer.Argument(
        metavar="RUN_OR_CKPT", help="A run directory (its latest network-snapshot) or a network .safetensors file.")],
    out: Annotated[Path, typer.Option(help="Output directory for shards, samples.npz and samples.json.")],
    n: Annotated[int, typer.Option("--n", help="Number of images (a multiple of the number of classes).",
                                   rich_help_panel="Sampling")] = 50_000,
    sampler: Annotated[str, typer.Option(help="Preset name (see `sample presets`) or a sampler key.",
                                         rich_help_panel="Sampling")] = "paper-256",
    seed: Annotated[int, typer.Option(help="Global seed; image i's noise depends only on (seed, i).",
                                      rich_help_panel="Sampling")] = 0,
    seed_ranges: Annotated[Optional[int], typer.Option(
        "--seed-ranges", help="Write K sets of N images from disjoint sample indices (EDM2's seed ranges), range r "
                              "in OUT/range-<r> from index r·N; range 0 is the plain run. Score them with `eval "
                              "imagenet OUT --seed-ranges`.", rich_help_panel="Sampling")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Image size (default: recorded in the network file).",
                                                      rich_help_panel="Sampling")] = None,
    quantization: Annotated[str, typer.Option(help="uint8 rounding: 'round' (PixelDiT/DiT) or 'floor' (ADM).",
                                              rich_help_panel="Sampling")] = "round",
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast around the model (weights stay fp32).",
                                       rich_help_panel="Compute")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (CFG doubles it inside the interval).",
                                            rich_help_panel="Compute")] = 64,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda:$LOCAL_RANK if present, else cpu).",
                                                  rich_help_panel="Compute")] = None,
    shard_size: Annotated[int, typer.Option(help="Images per shard file (keep it a multiple of --batch-size).",
                                            rich_help_panel="Shards")] = 1000,
    shards: Annotated[Optional[str], typer.Option(help="Shard ids to fill, e.g. '0,3,5-7' (default: all); under "
                                                       "torchrun each rank takes every WORLD_SIZE-th of them.",
                                                  rich_help_panel="Shards")] = None,
    merge: Annotated[bool, typer.Option("--merge/--no-merge", help="Merge into samples.npz when done (only when "
                                                                   "this job fills all shards).",
                                        rich_help_panel="Output")] = True,
    png: Annotated[bool, typer.Option("--png", help="Also write every image as png/<index>.png when merging.",
                                      rich_help_panel="Output")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved plan and exit.")] = False,
) -> None:
    """Sample N class-balanced images with EMA weights into resumable shards, then merge them.

    Rerunning the same command skips finished shards (checked by sha256) and redoes partial or corrupt
    ones. Independent jobs may fill different --shards of the same --out; under torchrun each rank takes
    every WORLD_SIZE-th shard and merging is left to `sample merge`. A latent model's samples are decoded
    with the autoencoder its snapshot records, so the shards hold images either way.

    [b]Examples[/b]
      pixeldit-bench sample results/runs/PixelDiT-S-4-0 --n 1000 --sampler ab2-50-cfg --out results/samples/s4
      pixeldit-bench sample imagenet256_xl_320ep.safetensors --sampler paper-256 --seed 1600 --bf16 --out out/256
      pixeldit-bench sample RUN --out DIR --shards 0-9 --no-merge      # one SLURM array task
      pixeldit-bench sample RUN --n 50000 --sampler paper-256 --seed-ranges 3 --out DIR   # DIR/range-0 .. range-2
      torchrun --nproc_per_node 8 $(which pixeldit-bench) sample RUN --out DIR --bf16
      pixeldit-bench sample merge DIR                                  # after all ranks are done
      pixeldit-bench sample RUN --out DIR --dry-run
    """
    if quantization not in QUANTIZATIONS:
        raise fail(f"unknown --quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    with exits_on(ValueError, FileNotFoundError):
        chosen = get_sampler(sampler)
        shard_ids = parse_shard_ids(shards)
        plan = plan_sampling(run_or_checkpoint, n, shard_size, shard_ids, resolution)
        sets = seed_range_folders(out, seed_ranges, n) if seed_ranges is not None else [(out, 0)]
    _, world = distributed_world()
    # With a subset of shards or several ranks, other jobs fill the rest: merge once afterwards.
    partial = world > 1 or shard_ids is not None
    merge = merge and not partial
    if dry_run:
        ranges = {"seed_ranges": [{"out": str(folder), "first_index": first, "last_index": first + n - 1}
                                  for folder, first in sets]} if seed_ranges is not None else {}
        console.print_json(json.dumps({**plan.describe(), "sampler": chosen.key, "seed": seed, "out": str(out),
                                       "batch_size": batch_size, "shard_size": shard_size, "bf16": bf16,
                                       "quantization": quantization, "merge": merge, "png": png,
                                       "model_evaluations_per_image": chosen.model_evaluations, **ranges}))
        return
    for folder, first_index in sets:
        with exits_on(ValueError, FileNotFoundError, OSError, FloatingPointError):
            result = sample_shards(plan.network_path, folder, n, chosen, seed, shard_size, shard_ids,
                                   batch_size=batch_size, device=device, autocast_bf16=bf16,
                                   resolution=plan.resolution, quantization=quantization, merge=merge, png=png,
                                   first_index=first_index)
        console.print(f"{len(result['written'])} shards written, {len(result['skipped'])} already complete in "
                      f"{folder}")
        if result["merged"]:
            console.print(f"merged: {result['merged']}")
        elif partial:
            console.print(f"when every job is done, run: pixeldit-bench sample merge {folder}")


@app.command("merge")
def sample_merge(
    out: Annotated[Path, typer.Argument(help="Directory holding shard-*.npz files.")],
    n: Annotated[Optional[int], typer.Option("--n", help="Merge only indices [0, n) (default: all shards).")] = None,
    png: Annotated[bool, typer.Option("--png", help="Also write every image as png/<index>.png.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run",
                                          help="Check the shards and print what would be merged.")] = False,
) -> None:
    """Check that the shards tile [0, n) with one set of settings, then write samples.npz / samples.json.

    Refuses gaps, overlapping shards, mixed settings and shards that fail their checksum, naming the files.

    [b]Examples[/b]
      pixeldit-bench sample merge results/samples/s4
      pixeldit-bench sample merge DIR --n 10000 --png
    """
    with exits_on(ValueError, FileNotFoundError, OSError):
        if dry_run:
            console.print_json(json.dumps(check_shards(out, n)))
            return
        console.print(f"merged: {merge_shards(out, n=n, png=png)}")


@app.command("presets")
def sample_presets(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the named sampler presets and their keys.

    [b]Examples[/b]
      pixeldit-bench sample presets
    """
    rows = [{"name": name, "key": s.key, "method": s.method, "steps": s.steps, "cfg": s.cfg_scale,
             "interval": [s.cfg_min, s.cfg_max], "shift": s.shift, "forward_passes": s.model_evaluations}
            for name, s in SAMPLER_PRESETS.items()]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="sampler presets (any key also works as --sampler)")
    for column in ("name", "key", "forward passes"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["key"], str(row["forward_passes"]))
    console.print(table)
