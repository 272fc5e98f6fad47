"""Seeded, sharded, resumable class-conditional sampling into the ADM evaluator's `.npz` format.

Reproducibility rules (sample i gets the same noise and label whatever the batch size, shard size or number
of processes; see `sample_shards` for when the images are bit-identical too):

- Labels: sample i has class ``i mod num_classes``. Any multiple of num_classes from index 0 is
  class-balanced (50,000 ImageNet samples = 50 per class) and a label never depends on n, so shards of
  a 10k run are reused when the run grows to 50k. (The reference gives class blocks of n / num_classes;
  the label multiset is the same.)
- Noise: sample i's noise comes from its own `torch.Generator` (CPU, float32) seeded with a hash of
  (seed, i) — see `noise_seed` — so it depends on nothing else. The model forward itself is the only
  place where batch composition can enter, through the kernels the backend picks.
- Seed ranges (EDM2 reports a metric over several independent seed ranges of 50,000 images): position k of a
  sample set holds sample index ``first_index + k`` (label and noise), 0 unless the settings record
  ``first_index``. `pixeldit-bench sample --seed-ranges K` writes range r of n images as the set with
  first_index = r·n in ``range-<r>/`` (`seed_range_folders`): the ranges' noise comes from disjoint indices,
  their labels stay class-balanced (n is a multiple of the classes), range 0 is byte for byte the plain run
  of the same n and seed, and range r equals images [r·n, (r+1)·n) of one run of K·n images.
- Latent models (LatentDiT snapshots): the noise has the latent shape (C, h, w), and the sampled latents are
  decoded by the autoencoder the snapshot records (refused if its weights changed since training), so the
  shards hold uint8 images exactly like a pixel model's.
- Quantisation to uint8, NHWC (ADM's `arr_0`): ``round`` (default) is the PixelDiT reference's
  ``clip((x + 1)·127.5 + 0.5, 0, 255)`` truncated to uint8, i.e. round half up (DiT does the same);
  ``floor`` is ADM's ``image_sample.py``, ``clip((x + 1)·127.5, 0, 255)`` truncated. The two shift FID
  slightly; the choice is part of the settings every shard records.
- Weights: EMA, fp32, with optional bf16 autocast around the model forward only (the sampler's update
  arithmetic stays float32), as in the reference's predict loop.

Layout of an output directory (shard naming, sidecars and checks are `pixeldit.infra.shards`)::

    shard-0000000-0000999.npz           arr_0 uint8 (count, H, W, 3), arr_1 int64 labels   (indices 0..999)
    .shards/shard-0000000-0000999.json  index range, settings, network, sha256 of the .npz
    samples.npz                         merged arr_0 / arr_1 (ADM evaluator input)
    samples.json                        settings, shard list, sha256 of samples.npz
    samples-grid.png                    the first images, one class per column
    png/0000000.png ...                 optional

A shard counts as done only when its sidecar exists, records the same settings and the `.npz` hashes to
the recorded sha256; anything else is redone. Every file is written to a temp name, fsynced and renamed,
so a killed job leaves either a whole file or none. Independent processes (SLURM array tasks, torchrun
ranks) fill disjoint shard ids in the same directory; `merge_shards` checks that the shards tile [0, n).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from pixeldit import flow
from pixeldit.compute import sampling_flops
from pixeldit.infra.devices import resolve_device
from pixeldit.infra.files import check_disk_space, save_npz_atomic, sha256_file, write_json_atomic
from pixeldit.infra.images import QUANTIZATIONS, quantize
from pixeldit.infra.progress import Progress
from pixeldit.infra.runs import resolve_network
from pixeldit.infra.shards import (
    Shard,
    load_array,
    merge_npz,
    pending_shards,
    ranks_shard_ids,
    shard_file,
    shard_ranges,
    verified_shards,
    write_sidecar,
)
from pixeldit.models.autoencoder import LatentAutoencoder, load_autoencoder
from pixeldit.models.flops import model_forward_flops, training_flops
from pixeldit.models.io import load_network, read_network_header
from pixeldit.samplers import Sampler, VelocityModel

log = logging.getLogger(__name__)

LABEL_RULE = "index mod num_classes"
NOISE_RULE = ("randn({shape}) float32 from torch.Generator(cpu).manual_seed("
              "sha256('pixeldit-bench/noise/<seed>/<index>')[:8] little-endian & (2**63-1))")
SAMPLES_SCHEMA = "pixeldit-bench/samples/v2"
SHARD_COMMAND = "`pixeldit-bench sample`"
GRID_COLUMNS = 10


# ------------------------------------------------------------------------------------------------
# Per-index randomness, labels, quantisation


def noise_seed(seed: int, index: int | str) -> int:
    """63-bit generator seed for sample `index`; a hash, so nearby (seed, index) pairs are unrelated.
    Text-to-image samples are keyed "<prompt>/<sample>" (`pixeldit.t2i_generate`), never equal to an integer key."""
    digest = hashlib.sha256(f"pixeldit-bench/noise/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def sample_noise(seed: int, indices: Iterable[int | str], shape: Sequence[int]) -> torch.Tensor:
    """(len(indices), *shape) float32 CPU noise; row k depends only on (seed, indices[k])."""
    generator = torch.Generator(device="cpu")
    rows = []
    for index in indices:
        generator.manual_seed(noise_seed(seed, index if isinstance(index, str) else int(index)))
        rows.append(torch.randn(tuple(shape), generator=generator, dtype=torch.float32))
    return torch.stack(rows)


def class_labels(indices: Iterable[int], num_classes: int) -> np.ndarray:
    """int64 label of each sample index: index mod num_classes."""
    return np.asarray(list(indices), dtype=np.int64) % num_classes


# ------------------------------------------------------------------------------------------------
# Generation


def generate(model: VelocityModel, indices: Sequence[int], sampler: Sampler, seed: int, num_classes: int,
             resolution: int, batch_size: int, device: str | torch.device, autocast_bf16: bool = False,
             quantization: str = "round", autoencoder: LatentAutoencoder | None = None,
             progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample the given indices: (uint8 (N, H, W, 3) images, int64 (N,) labels).

    `model` must already be on `device`; its null (unconditional) class id is `num_classes`. With an
    `autoencoder`, the model works on its latents: the noise has the latent shape and samples are decoded.
    `progress`, when given, counts the images as each batch is done.
    """
    model_classes = getattr(model, "num_classes", num_classes)
    if model_classes != num_classes:
        raise ValueError(f"num_classes={num_classes} but the model has {model_classes} classes (its null id)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    indices = [int(i) for i in indices]
    labels = class_labels(indices, num_classes)
    images = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
    shape = (3, resolution, resolution) if autoencoder is None else autoencoder.latent_shape(resolution)

    def forward(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            return model(x, t, y)

    for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        noise = sample_noise(seed, batch, shape).to(device)                        # (b, *shape)
        y = torch.from_numpy(labels[start:start + batch_size]).to(device)          # (b,)
        x = sampler.sample(forward, noise, y, null_label=num_classes)              # (b, *shape)
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"the sampler produced non-finite values for samples {batch[0]}..{batch[-1]} "
                                     f"(sampler {sampler.key}); try without --bf16 or check the checkpoint")
        images[start:start + len(batch)] = (quantize(x, quantization) if autoencoder is None
                                            else autoencoder.decode(x, quantization))  # (b, H, W, 3) uint8
        if progress is not None:
            progress.update(len(batch))
    return images, labels


# ------------------------------------------------------------------------------------------------
# Shards (the engine is pixeldit.infra.shards)


def sampling_settings(sampler: Sampler, seed: int, network_sha256: str, resolution: int, num_classes: int,
                      quantization: str, autocast_bf16: bool, latent: dict | None = None, first_index: int = 0) -> dict:
    """What makes two shards interchangeable; every shard records it and merge insists it is equal.
    `latent`: a latent snapshot's record (its autoencoder and latent shape), None for pixel models.
    `first_index`: the sample index of position 0 (seed ranges); recorded only when not 0, so the sidecars of a
    plain run, and of seed range 0, are those written before seed ranges existed and stay complete."""
    settings = {"sampler": sampler.key, "seed": seed, "network_sha256": network_sha256, "resolution": resolution,
                "num_classes": num_classes, "quantization": quantization,
                "precision": "bf16-autocast" if autocast_bf16 else "fp32",
                "labels": LABEL_RULE, "noise": NOISE_RULE.format(shape="3,H,W")}
    if first_index:
        settings["first_index"] = first_index
    if latent is not None:
        settings.update(noise=NOISE_RULE.format(shape=",".join(map(str, latent["latent_shape"]))),
                        autoencoder=latent["autoencoder_fingerprint"])
    return settings


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """What a sampling command will do, resolved and checked from the network file's header alone."""

    network_path: Path
    model_name: str
    num_classes: int
    resolution: int
    n: int
    shards: tuple[tuple[int, int], ...]   # (first, last) inclusive, all shards of [0, n)
    shard_ids: tuple[int, ...]            # the ones this process fills
    latent: dict | None = None            # a latent model's autoencoder record (snapshot metadata "latent")

    def describe(self) -> dict:
        return {"network": str(self.network_path), "model": self.model_name, "num_classes": self.num_classes,
                "resolution": self.resolution, "n": self.n, "num_shards": len(self.shards),
                "shard_ids": list(self.shard_ids), "output_bytes": self.n * self.resolution ** 2 * 3,
                "autoencoder": self.latent["autoencoder"] if self.latent else None}


def plan_sampling(network: str | os.PathLike, n: int, shard_size: int, shard_ids: Sequence[int] | None = None,
                  resolution: int | None = None) -> SamplingPlan:
    """Resolve the network (run dir -> latest snapshot) and check n, resolution and shard ids against it.

    Under torchrun (RANK / WORLD_SIZE set) each process takes every WORLD_SIZE-th of the chosen shards.
    """
    network_path = resolve_network(network)
    config, metadata, _ = read_network_header(network_path)
    resolution = resolution or metadata.get("resolution")
    latent = metadata.get("latent")
    if resolution is None:
        raise ValueError(f"{network_path} does not record its training resolution; pass --resolution")
    if metadata["family"] == "latent-dit":
        if not latent:
            raise ValueError(f"{network_path} holds a latent model but records no autoencoder (metadata 'latent'); "
                             f"sample a snapshot written by `pixeldit-bench train`")
        if resolution != metadata.get("resolution"):
            raise ValueError(f"{config.name or 'this latent model'} generates {metadata.get('resolution')}px images "
                             f"(its latent grid is fixed), not {resolution}px")
    elif resolution % config.patch_size:
        raise ValueError(f"resolution {resolution} is not divisible by the patch size {config.patch_size} of "
                         f"{config.name or 'this model'}; use a multiple of {config.patch_size}")
    if n < 1:
        raise ValueError(f"n={n}: sample at least one image per class, e.g. n={config.num_classes}")
    if n % config.num_classes:
        raise ValueError(f"n={n} is not a multiple of the model's {config.num_classes} classes, so the labels cannot "
                         f"be class-balanced; use e.g. n={math.ceil(n / config.num_classes) * config.num_classes}")
    shards = shard_ranges(n, shard_size)
    mine = ranks_shard_ids(len(shards), shard_ids, f"this run has {len(shards)} shards")
    return SamplingPlan(network_path, config.name, config.num_classes, int(resolution), n, tuple(shards),
                        tuple(mine), latent)


def sample_shards(network_path: str | os.PathLike, out_dir: str | os.PathLike, n: int, sampler: Sampler, seed: int,
                  shard_size: int, shard_ids: Sequence[int] | None = None, *, batch_size: int = 64,
                  device: str | torch.device | None = None, autocast_bf16: bool = False,
                  resolution: int | None = None, quantization: str = "round", merge: bool = False,
                  png: bool = False, first_index: int = 0) -> dict:
    """Fill the shards of [0, n) in `out_dir` (all or `shard_ids`; under torchrun this rank's share of them) with
    EMA-weight samples, skipping complete ones; with `merge`, merge afterwards. Position k holds sample index
    `first_index` + k (its label and noise).
    Returns {"written": [...], "skipped": [...], "merged": path or None}.

    Outputs are bit-identical for any split into shards or processes as long as shard_size is a multiple of
    batch_size (the batches then hold the same indices); across batch sizes they agree up to the float
    rounding of the backend's kernels, which may differ with the batch size.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if first_index < 0:
        raise ValueError(f"first_index={first_index}: sample indices start at 0")
    plan = plan_sampling(network_path, n, shard_size, shard_ids, resolution)
    out_dir = Path(out_dir)
    settings = sampling_settings(sampler, seed, sha256_file(plan.network_path), plan.resolution, plan.num_classes,
                                 quantization, autocast_bf16, plan.latent, first_index)
    mine = [plan.shards[i] for i in plan.shard_ids]
    pending = pending_shards(out_dir, mine, settings)
    device = resolve_device(device)
    model, metadata = load_network(plan.network_path, which="ema")   # checked before anything is written
    bytes_per_image = plan.resolution ** 2 * 3
    check_disk_space(out_dir, sum(b - a + 1 for a, b in pending) * bytes_per_image
                     + (n * bytes_per_image * (2 if png else 1) if merge else 0), f"sampling {len(pending)} shards")
    model.float().eval().to(device)
    if metadata.get("prediction", "v") != "v":   # an x-predicting network: samplers integrate its implied velocity
        model = flow.VelocityFromPrediction(model, metadata["prediction"])
    autoencoder = load_recorded_autoencoder(plan.latent, device) if plan.latent else None
    network = {"path": str(plan.network_path), "sha256": settings["network_sha256"], "weights": "ema",
               "config": metadata.get("config"), "summary": network_summary(model, metadata, sampler, plan.resolution, autoencoder)}
    progress = Progress(sum(last - first + 1 for first, last in pending), f"sample {sampler.key}")
    for first, last in pending:
        path = shard_file(out_dir, first, last)
        log.info("sampling %s", path.name)
        images, labels = generate(model, range(first_index + first, first_index + last + 1), sampler, seed,
                                  plan.num_classes, plan.resolution, batch_size, device, autocast_bf16, quantization,
                                  autoencoder, progress)
        save_npz_atomic(path, arr_0=images, arr_1=labels)
        write_sidecar(out_dir, first, last, settings, [path], count=last - first + 1,
                      sampler_config=dataclasses.asdict(sampler), network=network, device=str(device),
                      torch=torch.__version__)
    progress.close()
    merged = merge_shards(out_dir, n=n, png=png) if merge else None
    return {"written": [shard_file(out_dir, a, b).name for a, b in pending],
            "skipped": [shard_file(out_dir, a, b).name for a, b in mine if (a, b) not in pending],
            "merged": str(merged) if merged else None}


SEED_RANGE_FOLDER = "range-{index}"


def seed_range_folders(out_dir: str | os.PathLike, ranges: int, n: int) -> list[tuple[Path, int]]:
    """(folder, first sample index) of each of `ranges` seed ranges of n images under `out_dir`: range r starts at
    sample index r·n, so the ranges' indices, hence their noise, are disjoint."""
    if ranges < 2:
        raise ValueError(f"--seed-ranges {ranges}: seed ranges are for a mean and spread over at least 2 sets; "
                         f"leave it out for one")
    return [(Path(out_dir) / SEED_RANGE_FOLDER.format(index=index), index * n) for index in range(ranges)]

def network_summary(model: torch.nn.Module, metadata: dict, sampler: Sampler, resolution: int,
                    autoencoder: LatentAutoencoder | None) -> dict:
    """What the report needs about the network behind a sample set, in pixeldit.models.flops's conventions
    (2 FLOPs per MAC; training = 3 forward passes per image; sampling adds one decode for latent models)."""
    config = model.config
    kimg = metadata.get("kimg")
    return {"name": config.name, "type": "latent" if metadata["family"] == "latent-dit" else "pixel",
            "params": sum(parameter.numel() for parameter in model.parameters()),
            "gflops": model_forward_flops(config, resolution) / 1e9, "gflops_convention": "2flops_per_mac",
            "kimg": kimg,
            "train_pflops": None if kimg is None else training_flops(config, resolution, kimg) / 1e15,
            "sample_gflops_per_image": sampling_flops(config, sampler, resolution, autoencoder) / 1e9}


def load_recorded_autoencoder(latent: dict, device: torch.device) -> LatentAutoencoder:
    """The autoencoder a latent snapshot was trained with, refusing one whose weights changed since."""
    autoencoder = load_autoencoder(latent["autoencoder"], device)
    if autoencoder.fingerprint() != latent["autoencoder_fingerprint"]:
        raise ValueError(f"autoencoder {latent['autoencoder']} is not the one the model was trained with (fingerprint "
                         f"{autoencoder.fingerprint()[:12]}, trained with {latent['autoencoder_fingerprint'][:12]}); "
                         f"restore it or retrain the latent model")
    return autoencoder


# ------------------------------------------------------------------------------------------------
# Merge


def _verified_shards(out_dir: Path, n: int | None) -> list[Shard]:
    """The shards tiling [0, n) (all when n is None), every check done: checksums, tiling, settings, labels."""
    table = verified_shards(out_dir, n, unit="indices", command=SHARD_COMMAND)
    settings = table[0].sidecar["settings"]
    count = table[-1].last + 1
    if count % settings["num_classes"]:
        raise ValueError(f"the shards hold {count} samples, not a multiple of {settings['num_classes']} classes; "
                         f"sample up to a multiple first")
    labels = np.concatenate([load_array(shard_file(out_dir, shard.first, shard.last), "arr_1") for shard in table])
    first_index = settings.get("first_index", 0)
    if not np.array_equal(labels, class_labels(range(first_index, first_index + count), settings["num_classes"])):
        raise ValueError("shard labels do not follow the 'index mod num_classes' rule; the shards were not written "
                         "by this sampler — delete them and resample")
    return table


def check_shards(out_dir: str | os.PathLike, n: int | None = None) -> dict:
    """What `merge_shards` would merge, after all of its checks, without writing anything."""
    table = _verified_shards(Path(out_dir), n)
    return {"count": table[-1].last + 1, "settings": table[0].sidecar["settings"],
            "shards": [shard_file(out_dir, shard.first, shard.last).name for shard in table]}


def merge_shards(out_dir: str | os.PathLike, n: int | None = None, png: bool = False,
                 grid_rows: int = 8) -> Path:
    """Merge verified shards tiling [0, n) into samples.npz (+ samples.json, samples-grid.png, optional png/)."""
    out_dir = Path(out_dir)
    table = _verified_shards(out_dir, n)
    settings, count = table[0].sidecar["settings"], table[-1].last + 1
    shard_files = [shard_file(out_dir, shard.first, shard.last) for shard in table]
    resolution = settings["resolution"]
    check_disk_space(out_dir, count * resolution * resolution * 3 * (2 if png else 1), "merging")
    npz_path = merge_npz(out_dir / "samples.npz", shard_files)   # arr_0 images, arr_1 labels (checked above)
    _write_pngs(out_dir, shard_files, png, grid_rows * GRID_COLUMNS)
    first_sidecar = table[0].sidecar
    write_json_atomic(out_dir / "samples.json", {
        "schema": SAMPLES_SCHEMA, "file": npz_path.name, "sha256": sha256_file(npz_path), "count": count,
        "arrays": {"arr_0": f"uint8 ({count}, {resolution}, {resolution}, 3)", "arr_1": f"int64 ({count},) labels"},
        "settings": settings, "sampler_config": first_sidecar.get("sampler_config"),
        "network": first_sidecar.get("network"),
        "shards": [{"file": path.name, "first": shard.first, "last": shard.last, "sha256": shard.files[path.name]}
                   for shard, path in zip(table, shard_files)]})
    return npz_path


def _write_pngs(out_dir: Path, shard_files: Sequence[Path], all_images: bool, grid_size: int) -> None:
    """samples-grid.png from the first `grid_size` images (one class per column for <= 10 classes);
    with `all_images`, every image as png/<index:07d>.png."""
    from PIL import Image

    grid_images: list[np.ndarray] = []
    index = 0
    for shard in shard_files:
        images = load_array(shard, "arr_0")
        grid_images.extend(images[:max(0, grid_size - len(grid_images))])
        if all_images:
            (out_dir / "png").mkdir(exist_ok=True)
            for image in images:
                Image.fromarray(image).save(out_dir / "png" / f"{index:07d}.png")
                index += 1
        elif len(grid_images) >= grid_size:
            break
    columns = min(GRID_COLUMNS, len(grid_images))
    rows = math.ceil(len(grid_images) / columns)
    height, width, _ = grid_images[0].shape
    canvas = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
    for k, image in enumerate(grid_images):
        row, column = divmod(k, columns)
        canvas[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    Image.fromarray(canvas).save(out_dir / "samples-grid.png")
