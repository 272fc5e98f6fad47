"""Latents of a prepared dataset split, cached on disk once so latent training never runs the encoder.

One directory per (dataset split, autoencoder)::

    latents-00000.npy   chunk_size x h x w x C float32 (NHWC, like the image shards, so the training loader's
    latents-00001.npy   flip and layout code applies unchanged), one posterior sample per image
    labels.npy          (count,) int64
    latents.json        manifest: autoencoder fingerprint, dataset manifest sha256 + split, seed, chunk
                        size, shard list with sha256, `complete`

Resume: shards are written whole (temp file, fsync, rename) and the manifest is rewritten after each one,
so a killed job leaves only listed, complete shards (plus perhaps a stray temp file); rerunning continues
at the first missing shard. Image i's posterior noise depends only on (seed, i) and shard boundaries are
fixed by chunk_size, so a resumed cache is byte-identical to an uninterrupted one. A cache built from
another autoencoder, dataset, seed or chunk size is refused, never mixed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pixeldit.infra.datasets import MANIFEST_NAME as DATASET_MANIFEST
from pixeldit.infra.datasets import ImageDataset, open_dataset
from pixeldit.infra.files import atomic_path, sha256_file, write_json_atomic
from pixeldit.models.autoencoder import LatentAutoencoder

SCHEMA = "pixeldit-bench/latent-cache/v1"
MANIFEST_NAME = "latents.json"
LABELS_NAME = "labels.npy"


class CacheMismatchError(ValueError):
    """A cache directory holds latents of another autoencoder, dataset or setting."""


def shard_name(index: int) -> str:
    return f"latents-{index:05d}.npy"


def _save_npy_atomic(path: Path, array: np.ndarray) -> str:
    """np.save through a temp file + fsync + rename; returns the file's sha256."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.save(handle, array)
    return sha256_file(path)


def _identity(dataset: ImageDataset, autoencoder: LatentAutoencoder, seed: int, chunk_size: int) -> dict[str, Any]:
    """What makes two caches interchangeable; a stored cache must match it exactly to be reused."""
    return {"autoencoder": {"name": autoencoder.name, "fingerprint": autoencoder.fingerprint()},
            "dataset": {"path": str(Path(dataset.path).absolute()), "split": dataset.split, "count": len(dataset),
                        "manifest_sha256": sha256_file(Path(dataset.path) / DATASET_MANIFEST)},
            "seed": seed, "chunk_size": chunk_size, "posterior": "sample"}


def cache_latents(dataset: ImageDataset | str | os.PathLike, split: str | None, autoencoder: LatentAutoencoder,
                  out: str | os.PathLike, *, chunk_size: int = 4096, batch_size: int = 64, seed: int = 0) -> Path:
    """Encode every image of `dataset`'s split into `out` (resuming a partial cache); returns `out`.

    Each image gets one posterior sample (as DiT's cached-feature training does), scaled by the
    autoencoder's latent scaling.
    """
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
    if not isinstance(dataset, ImageDataset):
        dataset = open_dataset(dataset, split=split)
    elif dataset.split != split:
        raise ValueError(f"the dataset given is split {dataset.split!r}, not {split!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity = _identity(dataset, autoencoder, seed, chunk_size)
    manifest_path = out / MANIFEST_NAME
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        stored = {key: manifest.get(key) for key in identity}
        if stored != identity:
            differing = sorted(key for key in identity if stored[key] != identity[key])
            raise CacheMismatchError(f"{out} caches latents with other {', '.join(differing)} "
                                     f"(stored {[stored[k] for k in differing]}, now {[identity[k] for k in differing]}); "
                                     f"refusing to mix them: delete it or choose another output directory")
        if manifest["complete"]:
            return out
    else:
        manifest = {"schema": SCHEMA, **identity, "image_resolution": dataset.resolution,
                    "num_classes": dataset.num_classes, "layout": "NHWC float32", "shards": [], "complete": False}
    for stray in out.glob(".latents-*"):   # temp files of a killed job
        stray.unlink()

    shards: list[dict] = manifest["shards"]
    for index in range(len(shards), -(-len(dataset) // chunk_size)):
        start, stop = index * chunk_size, min((index + 1) * chunk_size, len(dataset))
        parts = []
        for batch_start in range(start, stop, batch_size):
            indices = np.arange(batch_start, min(batch_start + batch_size, stop))   # split-local indices
            images, _ = dataset.get_batch(indices)                                    # (B, H, W, 3) uint8
            parts.append(autoencoder.encode(images, sample=True, seed=seed, indices=indices).numpy())
        latents = np.concatenate(parts).transpose(0, 2, 3, 1)                          # (n, h, w, C) float32
        path = out / shard_name(index)
        shards.append({"file": path.name, "start": start, "count": stop - start,
                       "sha256": _save_npy_atomic(path, np.ascontiguousarray(latents))})
        manifest["latent_shape"] = list(latents.shape[1:])
        write_json_atomic(manifest_path, manifest)

    labels = np.asarray(dataset.labels, dtype=np.int64)                               # (count,)
    manifest["labels"] = {"file": LABELS_NAME, "sha256": _save_npy_atomic(out / LABELS_NAME, labels)}
    manifest["complete"] = True
    write_json_atomic(manifest_path, manifest)
    return out


@dataclass(frozen=True, eq=False)
class LatentDataset:
    """A complete latent cache with ImageDataset's reading interface: `get_batch(indices)` returns
    (N x h x w x C float32 latents, (N,) int64 labels), so `pixeldit.data.ImageBatches` can draw from it."""
    path: Path
    manifest: dict[str, Any]
    shards: tuple[np.ndarray, ...]   # memory maps, each n_i x h x w x C float32
    shard_starts: np.ndarray         # (num_shards,)
    labels: np.ndarray               # (count,) int64

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def split(self) -> str | None:
        return self.manifest["dataset"]["split"]

    @property
    def resolution(self) -> int:
        """Resolution of the images the latents encode (what a training config names)."""
        return self.manifest["image_resolution"]

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w): the shape one latent has as model input."""
        h, w, channels = self.manifest["latent_shape"]
        return channels, h, w

    @property
    def autoencoder_fingerprint(self) -> str:
        return self.manifest["autoencoder"]["fingerprint"]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)                                 # (N,)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"indices must lie in 0..{len(self) - 1}, got {indices.min()}..{indices.max()}")
        shard_of = np.searchsorted(self.shard_starts, indices, side="right") - 1       # (N,)
        latents = np.empty((len(indices), *self.manifest["latent_shape"]), dtype=np.float32)
        for shard in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == shard)
            latents[rows] = self.shards[shard][indices[rows] - self.shard_starts[shard]]
        return latents, self.labels[indices]


def open_latent_cache(path: str | os.PathLike, autoencoder: LatentAutoencoder | None = None) -> LatentDataset:
    """Open a complete cache; with `autoencoder`, refuse a cache built from a different one."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path} is not a latent cache (no {MANIFEST_NAME}); build it with `cache_latents`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("schema") != SCHEMA:
        raise ValueError(f"{manifest_path} has schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    if not manifest["complete"]:
        raise ValueError(f"{path} is incomplete ({len(manifest['shards'])} shards written); rerun `cache_latents` "
                         f"with the same arguments to finish it")
    if autoencoder is not None and autoencoder.fingerprint() != manifest["autoencoder"]["fingerprint"]:
        raise CacheMismatchError(f"{path} holds latents of autoencoder {manifest['autoencoder']['name']!r} "
                                 f"(fingerprint {manifest['autoencoder']['fingerprint'][:12]}), not of "
                                 f"{autoencoder.name!r} ({autoencoder.fingerprint()[:12]})")
    shape = tuple(manifest["latent_shape"])
    shards = []
    for entry in manifest["shards"]:
        array = np.load(path / entry["file"], mmap_mode="r")
        if array.shape != (entry["count"], *shape) or array.dtype != np.float32:
            raise ValueError(f"{path / entry['file']} holds {array.shape} {array.dtype}, the manifest promises "
                             f"{(entry['count'], *shape)} float32; delete the cache and rebuild it")
        shards.append(array)
    labels = np.load(path / manifest["labels"]["file"])
    if len(labels) != manifest["dataset"]["count"]:
        raise ValueError(f"{path / LABELS_NAME} has {len(labels)} labels for {manifest['dataset']['count']} latents")
    starts = np.asarray([entry["start"] for entry in manifest["shards"]], dtype=np.int64)
    return LatentDataset(path=path, manifest=manifest, shards=tuple(shards), shard_starts=starts, labels=labels)
