"""Thin CLI of the ImageNet evaluator; `pixeldit/cli/main.py` mounts it.

Mount: ``eval_app.command("imagenet")(eval_imagenet)``; `ref_app`'s build and info join the registry commands in
`pixeldit/cli/ref.py`, the group mounted as `pixeldit-bench ref` and `eval imagenet ref`.
Exit codes (`pixeldit.cli.console`): 1 bad input or protocol mismatch, 4 weights missing or corrupt.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.evaluate import BACKENDS, METRICS, plan_imagenet
from evaluators.imagenet.extractors import DEFAULT_FEATURES, EXTRACTORS
from evaluators.imagenet.features import Cache
from evaluators.imagenet.inception import resolve_weights
from evaluators.imagenet.metrics import DEFAULT_FRECHET_ROUTE, DEFAULT_IS_SPLIT_RULE, FRECHET_ROUTES, IS_SPLIT_RULES
from evaluators.imagenet.reference import (
    DEFAULT_PR_IMAGES,
    build_reference,
    open_reference,
    reference_summary,
    resolve_build_extractors,
)
from evaluators.imagenet.seed_ranges import evaluate_seed_ranges, find_seed_ranges
from evaluators.imagenet.sources import open_images
from evaluators.imagenet.uncertainty import DEFAULT_BOOTSTRAP_RESAMPLES, DEFAULT_BOOTSTRAP_SEED
from evaluators.registry import evaluate
from pixeldit.cli.console import console, exits_on
from pixeldit.infra.devices import current_world

ref_app = typer.Typer(no_args_is_help=True, help="Reference sets for the ImageNet metrics: build and inspect.")

WeightsOption = Annotated[str, typer.Option(
    help="auto (full torch-fidelity file if installed, else the offline conversion) | inception | offline.")]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")]
BatchOption = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per Inception batch "
                                                    "(default 64 on CPU, 250 on GPU).")]
CacheOption = Annotated[Optional[Path], typer.Option(help="Feature cache root (default $PIXELDIT_CACHE/imagenet).")]


def _device(device: str) -> str | None:
    return None if device == "auto" else device


def _labels(pairs: list[str]) -> dict[str, str]:
    run = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--label")
        run[key] = value
    return run


def print_result(record: dict) -> None:
    """A small table: metric, value, note."""
    table = Table(title=f"ImageNet metrics ({record['evaluator']['backend']} backend, "
                        f"{record['samples'].get('count')} samples)")
    for column in ("metric", "value", "note"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for metric, value in record["values"].items():
        note = record["unavailable"].get(metric, "")
        table.add_row(metric, "—" if value is None else f"{value:.6g}", note.removeprefix("unavailable: "))
    captions = []
    pr = record.get("extra", {}).get("precision_recall")
    if pr:
        fp32 = pr["fp32"]
        captions.append(f"precision/recall with ADM's fp16 distances; fp32: {fp32['precision']:.4f} / "
                        f"{fp32['recall']:.4f} ({'differs' if pr['fp16_changes_result'] else 'same'})")
    ranges = record["protocol"].get("seed_ranges")
    if ranges:
        captions.append(f"mean over {ranges['count']} seed ranges of {ranges['images']} images (first indices "
                        f"{', '.join(map(str, ranges['first_indices']))}); <metric>_std: std over the ranges "
                        f"(ddof 1); <metric>_min: EDM2's minimum")
    boot = record.get("extra", {}).get("fid_bootstrap")
    if boot:
        captions.append(f"FID bootstrap ({boot['resamples']} resamples of the samples, seed {boot['seed']}): "
                        f"std {boot['std']:.4g}, 95% interval [{boot['p2.5']:.4g}, {boot['p97.5']:.4g}]")
    if captions:
        table.caption = "\n".join(captions)
    console.print(table)


FeaturesOption = Annotated[str, typer.Option(
    help=f"Feature extractors, comma list from {','.join(EXTRACTORS)}; inception (ADM's suite) always runs, each other "
         "one adds its metrics as <metric>_<name>: fd, fd_infinity, kid, precision, recall, density, coverage "
         "(cmmd for clip); adm backend.")]


def eval_imagenet(
    samples: Annotated[Path, typer.Argument(help="ADM .npz (arr_0 uint8 NHWC), .npy, image folder or dataset; with "
                                                 "--seed-ranges the --out folder of `sample --seed-ranges K`.")],
    ref: Annotated[str, typer.Option("--ref", "--reference", help="Reference: a registry name (`ref list`, e.g. "
                                     "adm-imagenet256), an ADM batch (VIRTUAL_imagenet256_labeled.npz), an EDM2 "
                                     "reference .pkl, a `ref build` file, or an image set.")],
    backend: Annotated[str, typer.Option(help=f"{' | '.join(BACKENDS)} (adm: ADM evaluator semantics).")] = "adm",
    metrics: Annotated[Optional[str], typer.Option(help=f"Comma list from {','.join(METRICS)} (default all).")] = None,
    features: FeaturesOption = ",".join(DEFAULT_FEATURES),
    out: Annotated[Optional[Path], typer.Option(help="Result JSON (default: <SAMPLES>-imagenet.json).")] = None,
    reference_name: Annotated[Optional[str], typer.Option(
        "--reference-name", help="Registry entry the --ref file must be (its pinned sha256 or card is checked); "
                                 "a file named like an entry's file is checked without it.")] = None,
    weights: WeightsOption = "auto",
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    cache_dir: CacheOption = None,
    expected_samples: Annotated[Optional[int], typer.Option(help="Fail unless SAMPLES holds this many.")] = None,
    frechet: Annotated[str, typer.Option(help="How tr sqrt(S1 S2) is computed for FID/sFID: "
                                              + "; ".join(f"{k}: {v}" for k, v in FRECHET_ROUTES.items()))]
    = DEFAULT_FRECHET_ROUTE,
    is_splits: Annotated[str, typer.Option("--is-splits", help="How the Inception Score splits the samples: "
                                           + "; ".join(f"{k}: {v}" for k, v in IS_SPLIT_RULES.items()))]
    = DEFAULT_IS_SPLIT_RULE,
    bootstrap: Annotated[Optional[int], typer.Option(
        "--bootstrap", min=0, help=f"FID bootstrap resamples over the samples (reference fixed); 0 disables. Default: "
                                   f"{DEFAULT_BOOTSTRAP_RESAMPLES} when there are no more samples than the 2048 pool3 "
                                   "dimensions (~1 s at 200 samples), else none: each resample then costs about one "
                                   "FID.")] = None,
    bootstrap_seed: Annotated[int, typer.Option("--bootstrap-seed", min=0, help="Seed of the bootstrap draws and of "
                                                "the FID(N) subset order.")] = DEFAULT_BOOTSTRAP_SEED,
    label: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE for the result's run section (repeatable), "
                                                            "e.g. variant=PixelDiT-XL group=ablation.")] = None,
    seed_ranges: Annotated[bool, typer.Option(
        "--seed-ranges", help="SAMPLES is a folder of seed ranges (`sample --seed-ranges K`): score each (its result "
                              "beside its samples) and write one result of their mean, <metric>_std over the ranges "
                              "and <metric>_min (EDM2's minimum).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate inputs, print the plan, compute nothing.")]
    = False,
) -> None:
    """FID, sFID, IS, precision/recall and KID of SAMPLES against --ref, with ADM's evaluator semantics.

    [b]Examples[/b]
      pixeldit-bench eval imagenet samples.npz --ref VIRTUAL_imagenet256_labeled.npz
      pixeldit-bench eval imagenet samples.npz --reference adm-imagenet256
      pixeldit-bench eval imagenet samples.npz --ref refs/in256.npz --reference-name adm-imagenet256
      pixeldit-bench eval imagenet samples/ --ref refs/digits32.npz --metrics fid,kid --out metrics/imagenet.json
      pixeldit-bench eval imagenet samples.npz --ref refs/in256.npz --backend torch-fidelity --dry-run
      pixeldit-bench eval imagenet samples.npz --ref adm-imagenet256 --bootstrap 200 --bootstrap-seed 1
      pixeldit-bench eval imagenet samples.npz --ref refs/in256.npz --features inception,dinov2
      pixeldit-bench eval imagenet samples/xl --seed-ranges --ref adm-imagenet256 --out metrics/xl/imagenet.json
    """
    out = out or samples.with_name(f"{samples.stem if samples.suffix else samples.name}-imagenet.json")
    run = _labels(label or [])
    with exits_on(ImageNetEvalError, KeyError):
        # An explicit name is checked here; a registry name or an entry's file name is checked when it is opened.
        reference = open_reference(ref, Cache(cache_dir).memo, name=reference_name) if reference_name else ref
    options = dict(backend=backend, metrics=metrics, batch_size=batch_size, device=_device(device), cache_dir=cache_dir,
                   weights=weights, expected_samples=expected_samples, frechet=frechet, is_split_rule=is_splits,
                   bootstrap=bootstrap, bootstrap_seed=bootstrap_seed, features=features)
    if dry_run:
        with exits_on(ImageNetEvalError):
            ranges = find_seed_ranges(samples) if seed_ranges else []
            plan = plan_imagenet(ranges[0].samples if ranges else samples, reference, **options)
            listed = {"seed_ranges": [{"samples": str(item.samples), "first_index": item.first_index,
                                       "count": item.count} for item in ranges]} if ranges else {}
            console.print_json(json.dumps({**plan.summary(), **listed, "run": run, "out": str(out)}, default=str))
        return
    with exits_on(ImageNetEvalError):
        if seed_ranges:
            record = evaluate_seed_ranges(samples, reference, out, progress=True, run=run, **options)
        else:
            record = evaluate("imagenet", [samples, reference], out, progress=True, run=run, **options)
    if current_world()[0] == 0:
        print_result(record)
        console.print(f"result written to {out}")


@ref_app.command("build")
def ref_build(
    dataset: Annotated[Path, typer.Argument(help="Prepared dataset dir, image folder (centre-cropped to --res), "
                                                 ".npz or .npy.")],
    res: Annotated[int, typer.Option("--res", min=1, help="Resolution of the reference (and of the samples).")],
    out: Annotated[Path, typer.Option("--out", help="Output .npz (ADM reference-batch format + protocol card).")],
    split: Annotated[Optional[str], typer.Option(help="Split of a prepared dataset (e.g. reference).")] = None,
    pr_images: Annotated[int, typer.Option(min=1, help="Images kept as arr_0 for precision/recall/KID.")] =
    DEFAULT_PR_IMAGES,
    weights: WeightsOption = "auto",
    device: DeviceOption = "auto",
    batch_size: BatchOption = None,
    cache_dir: CacheOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    features: FeaturesOption = ",".join(DEFAULT_FEATURES),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the input, print the plan, write nothing.")]
    = False,
) -> None:
    """Build reference statistics (mu, sigma, mu_s, sigma_s over all images; mu_<name>, sigma_<name> of every other
    --features extractor) and arr_0 from a dataset.

    [b]Examples[/b]
      pixeldit-bench eval imagenet ref build data/digits32 --split reference --res 32 --out results/refs/digits32-32-inception.npz
      pixeldit-bench eval imagenet ref build /data/imagenet/train --res 256 --out results/refs/imagenet-256-inception.npz
      pixeldit-bench ref build /data/imagenet/train --res 256 --features inception,dinov2 --out results/refs/in256.npz
    """
    command = (f"pixeldit-bench eval imagenet ref build {dataset} --res {res} --out {out}"
               + (f" --split {split}" if split else "")
               + (f" --features {features}" if features != ",".join(DEFAULT_FEATURES) else ""))
    if dry_run:
        with exits_on(ImageNetEvalError):
            source = open_images(dataset, name="dataset", crop_to=res, split=split)
            chosen = resolve_weights(weights)
            extractors = resolve_build_extractors(features)
        console.print_json(json.dumps({"source": source.describe(), "count": len(source),
                                       "resolution": list(source.resolution), "arr_0": min(pr_images, len(source)),
                                       "weights": chosen.card(),
                                       "extractors": {name: entry.card() for name, entry in extractors.items()},
                                       "out": str(out), "command": command}))
        return
    with exits_on(ImageNetEvalError):
        written = build_reference(dataset, out, res, split=split, pr_images=pr_images, batch_size=batch_size,
                                  device=_device(device), cache_dir=cache_dir, weights=weights, overwrite=overwrite,
                                  progress=True, build_command=command, features=features)
    card = written["card"]
    console.print(f"wrote {written['path']}: {card['stats_count']} images in the statistics, {card['images_count']} "
                  f"in arr_0, {card['resolution'][0]}×{card['resolution'][1]}, weights {card['weights']}"
                  + "".join(f", {name} statistics" for name in card.get("extractors", {}))
                  + f", sha256 {written['sha256']}")


@ref_app.command("info")
def ref_info(file: Annotated[str, typer.Argument(help="Reference .npz (ADM batch or `ref build` output), EDM2 .pkl "
                                                     "or a registry name.")]) -> None:
    """Show what a reference file holds and verify its checksum (files with a protocol card).

    [b]Examples[/b]
      pixeldit-bench eval imagenet ref info VIRTUAL_imagenet256_labeled.npz
    """
    with exits_on(ImageNetEvalError):
        reference = open_reference(file)
    console.print_json(json.dumps({**reference_summary(reference), "stored": list(reference.stat_keys)
                                   + [f"{key}_{name}" for name in reference.extractor_stats for key in ("mu", "sigma")]
                                   + (["arr_0"] if reference.images is not None else []),
                                   "card": reference.card}, default=str))
