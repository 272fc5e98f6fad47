"""The on-disk dataset format: uint8 image shards, a label array and a checksummed manifest.

One directory per dataset::

    images-00000.npy   N×H×W×3 uint8 (NHWC, as ADM's `arr_0`), at most ~1 GiB per shard, memory-mappable
    images-00001.npy   ...
    labels.npy         (count,) int64, in image order across shards
    dataset.json       the manifest: name, resolution, classes, count, splits, shard list with sha256,
                       source, preprocessing, skipped inputs and the command that rebuilds it

Splits are contiguous ranges of the global image order (`"splits": {"train": [0, 1297], ...}`), so a split
is a slice of the shards, not a copy. Writing is atomic: everything goes into a hidden `.NAME.partial-*`
directory beside the target, `dataset.json` is written last, and only then is the directory renamed into
place, so a killed prepare never leaves a directory that looks complete.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pixeldit.infra.files import sha256_file, temp_beside, write_json_atomic

SCHEMA = "pixeldit-bench/dataset/v1"
MANIFEST_NAME = "dataset.json"
LABELS_NAME = "labels.npy"
DEFAULT_SHARD_BYTES = 1 << 30
_COPY_ROWS = 1024  # rows per chunk when shrinking the last shard; bounds memory, not speed


class DatasetError(ValueError):
    """A dataset directory is missing, incomplete or corrupt; the message says how to rebuild it."""


def shard_name(index: int) -> str:
    return f"images-{index:05d}.npy"


def prepare_command(source: str, out: str | os.PathLike, resolution: int) -> str:
    """The CLI call that (re)builds a dataset; stored in the manifest and quoted in every error."""
    return f"pixeldit-bench data prepare {shlex.quote(str(source))} --out {shlex.quote(str(out))} --res {resolution}"


def rebuild_command(path: str | os.PathLike, manifest: Mapping[str, Any]) -> str:
    """The stored `prepare_command` aimed at where the dataset is now (it may have been moved or copied since
    it was built), with --overwrite: what every error about a damaged dataset tells the user to run."""
    stored = manifest.get("prepare_command")
    words = shlex.split(stored if isinstance(stored, str) and stored else "pixeldit-bench data prepare SRC --out OUT")
    if "--out" in words[:-1]:
        words[words.index("--out") + 1] = str(path)
    return shlex.join([*words, "--overwrite"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DatasetWriter:
    """Streams images into shards in a hidden temporary directory; `finish` makes the dataset appear.

    Memory stays at one image plus the labels: each shard is a `.npy` memory map of full capacity, and
    the last, partly filled one is copied in chunks into a file of the exact size. Use as a context
    manager so a failure removes the temporary directory::

        with DatasetWriter(out, resolution=32) as writer:
            writer.add(image, label)       # image: res×res×3 uint8
            writer.finish(manifest_fields)
    """

    def __init__(self, out: str | os.PathLike, resolution: int, *, overwrite: bool = False,
                 shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.out = Path(out).absolute()
        self.resolution = resolution
        _check_target(self.out, overwrite)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.image_shape = (resolution, resolution, 3)
        self.images_per_shard = max(1, shard_bytes // int(np.prod(self.image_shape)))
        self.tmp_dir = temp_beside(self.out, directory=True)
        self.labels: list[int] = []
        self.shards: list[dict[str, Any]] = []
        self._shard: np.memmap | None = None   # the shard being filled, images_per_shard×H×W×3
        self._filled = 0                       # rows written into self._shard

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp_dir.exists():              # finish() renames it away; anything left is a failed write
            self._shard = None
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    @property
    def count(self) -> int:
        return len(self.labels)

    def add(self, image: np.ndarray, label: int) -> None:
        if image.shape != self.image_shape or image.dtype != np.uint8:
            raise ValueError(f"expected a {self.image_shape} uint8 image, got {image.shape} {image.dtype}")
        if self._shard is None:
            path = self.tmp_dir / shard_name(len(self.shards))
            self._shard = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                                    shape=(self.images_per_shard, *self.image_shape))
        self._shard[self._filled] = image
        self._filled += 1
        self.labels.append(int(label))
        if self._filled == self.images_per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        path = self.tmp_dir / shard_name(len(self.shards))
        full, filled = self._shard, self._filled
        if filled < len(full):                 # the last shard: copy its filled rows into an exact-size file
            exact_path = path.with_suffix(".exact")
            exact = np.lib.format.open_memmap(exact_path, mode="w+", dtype=np.uint8,
                                              shape=(filled, *self.image_shape))
            for start in range(0, filled, _COPY_ROWS):
                exact[start:start + _COPY_ROWS] = full[start:min(start + _COPY_ROWS, filled)]
            exact.flush()
            del exact, full
            os.replace(exact_path, path)
        else:
            full.flush()
            del full
        self._shard, self._filled = None, 0
        _fsync(path)
        self.shards.append({"file": path.name, "count": filled, "sha256": sha256_file(path)})

    def finish(self, fields: Mapping[str, Any], splits: Mapping[str, Sequence[int]] | None = None) -> Path:
        """Write labels and manifest, then move the dataset into place; returns its path.

        `fields` must hold name, num_classes, class_names, source, preprocessing and prepare_command
        (skipped is optional). `splits` maps a split name to a [start, stop) range; the default is one
        "train" split over everything.
        """
        if self.count == 0:
            raise DatasetError(f"no images were written to {self.out}; check the source and the skipped list")
        if self._shard is not None:
            self._close_shard()
        labels_path = self.tmp_dir / LABELS_NAME
        np.save(labels_path, np.asarray(self.labels, dtype=np.int64))   # (count,)
        _fsync(labels_path)
        splits = splits or {"train": (0, self.count)}
        splits = {name: [int(start), int(stop)] for name, (start, stop) in splits.items()}
        manifest = {"schema": SCHEMA, "name": fields["name"], "resolution": self.resolution,
                    "image_layout": "NHWC uint8 RGB", "count": self.count,
                    "num_classes": fields["num_classes"], "class_names": list(fields["class_names"]),
                    "splits": splits, "shards": self.shards,
                    "labels": {"file": LABELS_NAME, "sha256": sha256_file(labels_path)},
                    "source": fields["source"], "preprocessing": fields["preprocessing"],
                    "skipped": fields.get("skipped", {"count": 0, "files": []}),
                    "prepare_command": fields["prepare_command"]}
        _validate_manifest(manifest, self.tmp_dir)
        write_json_atomic(self.tmp_dir / MANIFEST_NAME, manifest).chmod(0o644)   # written as a private temp file
        _replace_dir(self.tmp_dir, self.out)
        return self.out


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse to clobber anything that is not a dataset, and a dataset unless asked to."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetError(f"--out {out} is a file; choose a directory path")
    if (out / MANIFEST_NAME).exists():
        if not overwrite:
            raise DatasetError(f"{out} already holds a dataset; pass --overwrite to rebuild it")
    elif any(out.iterdir()):
        raise DatasetError(f"{out} is a non-empty directory that is not a dataset; choose another --out")


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`; an existing target is moved aside first and deleted afterwards."""
    old = None
    if target.exists():
        old = temp_beside(target, directory=True)
        os.replace(target, old / target.name)
    os.replace(new, target)
    _fsync(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reading

_REQUIRED_FIELDS = ("name", "resolution", "count", "num_classes", "class_names", "splits", "shards",
                    "labels", "source", "preprocessing", "skipped", "prepare_command")


_FIELD_TYPES = {"name": str, "resolution": int, "count": int, "num_classes": int, "class_names": list,
                "splits": dict, "shards": list, "labels": dict, "source": dict, "preprocessing": str,
                "skipped": dict, "prepare_command": str}


def _validate_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    missing = [key for key in _REQUIRED_FIELDS if key not in manifest]
    if missing:
        raise DatasetError(f"{path / MANIFEST_NAME} lacks fields {missing}")
    wrong = [f"{key} is {type(manifest[key]).__name__}" for key, kind in _FIELD_TYPES.items()
             if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool)]
    wrong += [f"shards[{i}] is not an object with file, count and sha256" for i, shard in enumerate(manifest["shards"])
              if not (isinstance(shard, dict) and {"file", "count", "sha256"} <= set(shard))]
    if wrong:
        raise DatasetError(f"{path / MANIFEST_NAME} is malformed: {'; '.join(wrong)}")
    if sum(shard["count"] for shard in manifest["shards"]) != manifest["count"]:
        raise DatasetError(f"{path / MANIFEST_NAME}: shard counts do not add up to count={manifest['count']}")
    if len(manifest["class_names"]) != manifest["num_classes"]:
        raise DatasetError(f"{path / MANIFEST_NAME}: {len(manifest['class_names'])} class names for "
                           f"num_classes={manifest['num_classes']}")
    for split, (start, stop) in manifest["splits"].items():
        if not 0 <= start < stop <= manifest["count"]:
            raise DatasetError(f"{path / MANIFEST_NAME}: split {split!r} range [{start}, {stop}) is outside "
                               f"0..{manifest['count']}")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The validated manifest of a dataset directory (no image data is touched)."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DatasetError(f"{path} is not a prepared dataset (no {MANIFEST_NAME}); build it with "
                           f"`{prepare_command('SRC', path, 256)}` (SRC: a class folder, a .tar or digits32)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{manifest_path} is corrupt ({error}); rebuild the dataset with "
                           f"`{prepare_command('SRC', path, 256)}`") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError(f"{manifest_path} has schema {found!r}, expected {SCHEMA!r}; rebuild the dataset "
                           f"with `{prepare_command('SRC', path, 256)}`")
    try:
        _validate_manifest(manifest, path)
    except DatasetError as error:
        raise DatasetError(f"{error}; rebuild with `{rebuild_command(path, manifest)}`") from None
    return manifest


def _load_array(path: Path, shape: tuple[int, ...], dtype: np.dtype, rebuild: str) -> np.ndarray:
    """Memory-map one `.npy` file and check it has the shape the manifest promises (catches truncation)."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing; rebuild the dataset with `{rebuild}`")
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"{path} is corrupt ({error}); rebuild the dataset with `{rebuild}`") \
            from None
    if array.shape != shape or array.dtype != dtype:
        raise DatasetError(f"{path} holds {array.shape} {array.dtype}, the manifest promises {shape} "
                           f"{np.dtype(dtype)}; rebuild the dataset with `{rebuild}`")
    return array


def verify_checksums(path: str | os.PathLike, manifest: Mapping[str, Any] | None = None) -> list[str]:
    """Recompute every file's sha256; returns the files that differ from the manifest (empty: all good)."""
    path = Path(path)
    manifest = manifest or read_manifest(path)
    entries = [*manifest["shards"], manifest["labels"]]
    return [entry["file"] for entry in entries
            if not (path / entry["file"]).is_file() or sha256_file(path / entry["file"]) != entry["sha256"]]


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A prepared dataset (or one split of it) over memory-mapped shards.

    `dataset[i]` is (H×W×3 uint8 image, int label); `get_batch(indices)` gathers many at once. Indices are
    local to the split: 0..len-1.
    """
    path: Path
    manifest: dict[str, Any]
    split: str | None
    start: int                      # first global index of this split
    stop: int
    shards: tuple[np.ndarray, ...]  # memory maps, each n_i×H×W×3 uint8
    shard_starts: np.ndarray        # (num_shards,) global index of each shard's first image
    labels: np.ndarray              # (stop-start,) int64, this split only

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def resolution(self) -> int:
        return self.manifest["resolution"]

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        images, labels = self.get_batch(np.asarray([index]))
        return images[0], int(labels[0])

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images (N×H×W×3 uint8) and labels (N,) int64 for split-local `indices`, in the order given."""
        indices = np.asarray(indices, dtype=np.int64)                     # (N,)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"indices must lie in 0..{len(self) - 1}, got {indices.min()}..{indices.max()}")
        global_indices = indices + self.start                             # (N,)
        shard_of = np.searchsorted(self.shard_starts, global_indices, side="right") - 1  # (N,)
        images = np.empty((len(indices), self.resolution, self.resolution, 3), dtype=np.uint8)
        for shard in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == shard)                      # positions in the batch
            offsets = global_indices[rows] - self.shard_starts[shard]      # rows inside the shard
            order = np.argsort(offsets)                                   # sorted reads are kinder to the disk
            images[rows[order]] = self.shards[shard][offsets[order]]
        return images, self.labels[indices]

    def all_images(self) -> np.ndarray:
        """Every image of the split as one N×H×W×3 uint8 array (for reference sets and small datasets)."""
        return self.get_batch(np.arange(len(self)))[0]


def open_dataset(path: str | os.PathLike, split: str | None = None, *, checksums: bool = False) -> ImageDataset:
    """Open a prepared dataset, optionally one split of it.

    Always checks the manifest and that every shard exists with the promised shape and dtype (cheap: only
    `.npy` headers and file sizes); `checksums=True` also recomputes every sha256 (reads all the data, as
    `pixeldit-bench data info` does). Problems raise DatasetError naming the file and the rebuild command.
    """
    path = Path(path)
    manifest = read_manifest(path)
    rebuild = rebuild_command(path, manifest)
    if split is not None and split not in manifest["splits"]:
        raise DatasetError(f"{path} has no split {split!r}; it has {sorted(manifest['splits'])}")
    if checksums:
        bad = verify_checksums(path, manifest)
        if bad:
            raise DatasetError(f"checksum mismatch in {path}: {', '.join(bad)}; rebuild the dataset with "
                               f"`{rebuild}`")
    image_shape = (manifest["resolution"], manifest["resolution"], 3)
    shards = tuple(_load_array(path / entry["file"], (entry["count"], *image_shape), np.dtype(np.uint8), rebuild)
                   for entry in manifest["shards"])
    labels = _load_array(path / manifest["labels"]["file"], (manifest["count"],), np.dtype(np.int64), rebuild)
    if labels.size and (labels.min() < 0 or labels.max() >= manifest["num_classes"]):
        raise DatasetError(f"{path / manifest['labels']['file']} has labels outside 0..{manifest['num_classes'] - 1}; "
                           f"rebuild the dataset with `{rebuild}`")
    start, stop = manifest["splits"][split] if split is not None else (0, manifest["count"])
    shard_starts = np.cumsum([0] + [entry["count"] for entry in manifest["shards"][:-1]])  # (num_shards,)
    return ImageDataset(path=path, manifest=manifest, split=split, start=start, stop=stop, shards=shards,
                        shard_starts=shard_starts, labels=np.asarray(labels[start:stop]))
