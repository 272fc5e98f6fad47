"""Prepare an ImageNet-style class folder (`SRC/<class>/<image>`), or an uncompressed `.tar` of one.

Classes are the sorted sub-folder names and become labels 0..C-1; images are read in sorted path order,
one at a time, through the ADM centre crop. Files that do not decode are logged, skipped and listed in
the manifest under `skipped`; nothing is dropped silently. A folder and a `.tar` of it give the same images.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import multiprocessing
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from pixeldit.infra.datasets import DEFAULT_SHARD_BYTES, DatasetError, DatasetWriter, prepare_command
from pixeldit.infra.images import center_crop_arr
from pixeldit.infra.progress import track

log = logging.getLogger(__name__)

PREPROCESSING = ("ADM center_crop_arr: converted to RGB, PIL BOX x1/2 downsampling while the short side >= 2*res, "
                 "BICUBIC resize of the short side to res, centre crop res x res; no flip")
# What PIL raises for files it cannot read or decode: I/O errors, unknown formats, truncated data, bad
# headers, decompression bombs.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class SourceFile:
    class_name: str
    path: str                              # shown in logs and the manifest: a file path or `archive.tar:member`
    read: Callable[[], bytes]


@dataclass(frozen=True)
class SourceListing:
    kind: str                              # "folder" or "tar"
    class_names: list[str]                 # sorted; index = label
    files: list[SourceFile]                # sorted by (class, path inside the class)
    outside_classes: list[str]             # files not inside a class folder: reported as skipped


def list_source(src: str | os.PathLike) -> SourceListing:
    """Classes and files of a class folder or `.tar`, without decoding anything."""
    src = Path(src)
    if src.is_dir():
        return _list_folder(src)
    if src.is_file() and tarfile.is_tarfile(src):
        return _list_tar(src)
    raise DatasetError(f"{src} is neither a class folder nor a .tar archive; pass a directory laid out as "
                       f"SRC/<class>/<image>, a .tar of one, or the literal digits32")


def _list_folder(src: Path) -> SourceListing:
    class_dirs = sorted(child for child in src.iterdir() if child.is_dir())
    files = [SourceFile(class_dir.name, str(file), file.read_bytes)
             for class_dir in class_dirs
             for file in sorted(path for path in class_dir.rglob("*") if path.is_file())]
    outside = sorted(str(child) for child in src.iterdir() if child.is_file())
    return SourceListing("folder", [class_dir.name for class_dir in class_dirs], files, outside)


def _list_tar(src: Path) -> SourceListing:
    try:
        # Plain "r:" only: members are read one by one in sorted order, which needs random access.
        with tarfile.open(src, mode="r:") as archive:
            members = [member for member in archive.getmembers() if member.isfile()]
    except tarfile.ReadError:
        raise DatasetError(f"{src} is a compressed tar; random access needs a plain one: decompress it first "
                           f"(e.g. `gunzip -k {src}`)") from None
    parts = {member: PurePosixPath(member.name).parts for member in members}
    # A tar made with `tar cf x.tar imagenet/` has every path under one top folder: strip it.
    tops = {p[0] for p in parts.values()}
    if len(tops) == 1 and all(len(p) >= 3 for p in parts.values()):
        parts = {member: p[1:] for member, p in parts.items()}
    inside = sorted((p[0], p[1:], member) for member, p in parts.items() if len(p) >= 2)
    files = [SourceFile(class_name, f"{src}:{member.name}", functools.partial(_read_tar_member, src, member))
             for class_name, _, member in inside]
    outside = sorted(f"{src}:{member.name}" for member, p in parts.items() if len(p) < 2)
    return SourceListing("tar", sorted({class_name for class_name, _, _ in inside}), files, outside)


def _read_tar_member(src: Path, member: tarfile.TarInfo) -> bytes:
    # Opening a plain tar reads one header; the member's offset is already known, so this is a seek.
    with tarfile.open(src, mode="r:") as archive:
        return archive.extractfile(member).read()


def _decode(file: SourceFile, resolution: int) -> np.ndarray | str:
    """The centre-cropped image (res×res×3 uint8), or why the file could not be used."""
    try:
        with Image.open(io.BytesIO(file.read())) as image:
            return center_crop_arr(image, resolution)
    except Image.UnidentifiedImageError:   # its message holds a memory address; the manifest must be reproducible
        return "UnidentifiedImageError: not an image format PIL can read"
    except _DECODE_ERRORS as error:
        return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def _ordered_map(workers: int) -> Iterator[Callable]:
    """`map` in this process, or over a pool of `workers` processes; results come back in input order."""
    if workers <= 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield functools.partial(pool.imap, chunksize=16)


def prepare_folder(src: str | os.PathLike, out: str | os.PathLike, resolution: int, *, name: str | None = None,
                   split: str = "train", overwrite: bool = False, shard_bytes: int = DEFAULT_SHARD_BYTES,
                   workers: int = 1, progress: bool = False) -> Path:
    """Build a dataset at `out` from a class folder or `.tar`, ADM-centre-cropped to `resolution`.

    Streams: images are decoded one at a time (by `workers` processes when > 1; the output is the same)
    and written straight into the shards. Returns the dataset path; the manifest's `skipped` lists every
    file that could not be used, with the reason.
    """
    src = Path(src).absolute()
    listing = list_source(src)
    if not listing.class_names:
        raise DatasetError(f"{src} has no class folders; expected SRC/<class>/<image>")
    label_of = {class_name: label for label, class_name in enumerate(listing.class_names)}
    skipped: list[dict[str, str]] = [{"path": path, "reason": "not inside a class folder"}
                                     for path in listing.outside_classes]
    for entry in skipped:
        log.warning("skipping %s: %s", entry["path"], entry["reason"])
    decode = functools.partial(_decode, resolution=resolution)
    with DatasetWriter(out, resolution, overwrite=overwrite, shard_bytes=shard_bytes) as writer, \
            _ordered_map(workers) as ordered_map:
        decoded = ordered_map(decode, listing.files)
        for file, pixels in track(zip(listing.files, decoded), f"prepare {src.name}", total=len(listing.files),
                                  enabled=progress):
            if isinstance(pixels, str):
                log.warning("skipping unreadable image %s: %s", file.path, pixels)
                skipped.append({"path": file.path, "reason": pixels})
                continue
            writer.add(pixels, label_of[file.class_name])              # pixels: res×res×3 uint8
        if skipped:
            log.warning("skipped %d of %d files in %s (listed under 'skipped' in dataset.json)",
                        len(skipped), len(listing.files) + len(listing.outside_classes), src)
        fields: dict[str, Any] = {
            "name": name or src.name.removesuffix(".tar"),
            "num_classes": len(listing.class_names), "class_names": listing.class_names,
            "source": {"kind": listing.kind, "path": str(src), "files": len(listing.files)},
            "preprocessing": f"{PREPROCESSING}; res={resolution}",
            "skipped": {"count": len(skipped), "files": skipped},
            "prepare_command": prepare_command(str(src), writer.out, resolution)}
        return writer.finish(fields, splits={split: (0, writer.count)})
