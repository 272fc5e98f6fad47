"""Image sets the evaluator reads: ADM `.npz`, `.npy`, a folder of PNG/JPEG, a prepared dataset, an array.

Every source yields uint8 NHWC RGB batches in a fixed order, knows its count and resolution without
decoding everything, and has a content hash (the cache key of its features). Files are streamed: a
50k-image `.npz` is read batch by batch (memory-mapped when stored uncompressed, as `np.savez` writes it),
never loaded whole. Invalid input fails early with the file's name and the fix.

Content hashes of files are memoised by (path, size, mtime, inode) in the cache directory, so a second
run over the same 10 GB `.npz` costs a `stat`, not a re-read.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
import zlib
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from evaluators.imagenet.errors import InputError
from pixeldit.infra.datasets import DatasetError, open_dataset
from pixeldit.infra.files import sha256_file
from pixeldit.infra.images import center_crop_arr

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_QUANTISE_HINT = ("the ADM protocol needs uint8 0..255 NHWC images; quantise as the sampler should, e.g. "
                  "`np.clip(np.round(x * 127.5 + 128), 0, 255).astype(np.uint8)` for x in [-1, 1]")
_NPZ_HINT = "write samples as `np.savez(path, arr_0=images)` with images uint8 N×H×W×3"


# --------------------------------------------------------------------------------------------- hashing

class HashMemo:
    """sha256 of files remembered by (path, size, mtime_ns, inode); a changed file gets a new entry."""

    def __init__(self, directory: Path | None):
        self.directory = Path(directory) if directory is not None else None

    def _slot(self, stamp: object) -> Path | None:
        if self.directory is None:
            return None
        key = hashlib.sha256(json.dumps(stamp, sort_keys=True, default=str).encode()).hexdigest()
        return self.directory / f"{key}.json"

    def get(self, stamp: object) -> dict | None:
        slot = self._slot(stamp)
        if slot is None or not slot.is_file():
            return None
        try:
            return json.loads(slot.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, stamp: object, value: dict) -> None:
        slot = self._slot(stamp)
        if slot is None:
            return
        slot.parent.mkdir(parents=True, exist_ok=True)
        temp = slot.with_name(f".{slot.name}.{os.getpid()}")
        temp.write_text(json.dumps(value))
        os.replace(temp, slot)


def file_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}


def file_sha256(path: Path, memo: HashMemo | None = None) -> str:
    """sha256 of a file's bytes, memoised by its stat stamp."""

    stamp = {"kind": "file-sha256", **file_stamp(path)}
    hit = memo.get(stamp) if memo else None
    if hit:
        return hit["sha256"]
    digest = sha256_file(path)
    if memo:
        memo.put(stamp, {"sha256": digest})
    return digest


# --------------------------------------------------------------------------------------------- checks

def check_layout(shape: Sequence[int], dtype: np.dtype, where: str, data: np.ndarray | None = None) -> None:
    """Raise InputError unless (shape, dtype) is a non-empty uint8 N×H×W×3 image array."""
    dtype = np.dtype(dtype)
    if dtype != np.uint8:
        nan_note = ""
        if data is not None and np.issubdtype(dtype, np.floating):
            nans = int(np.isnan(data).sum())
            if nans:
                nan_note = f" and contains {nans} NaN values (a diverged sampler; fix the model or its sampler first)"
        raise InputError(f"{where} holds {dtype} images{nan_note}; {_QUANTISE_HINT}")
    if len(shape) != 4:
        raise InputError(f"{where} has shape {tuple(shape)}; expected N×H×W×3 (NHWC) uint8 images")
    if shape[-1] != 3:
        hint = ("it looks channel-first (N×3×H×W): transpose with `x.transpose(0, 2, 3, 1)`"
                if shape[1] == 3 else "grey or RGBA images must be converted to RGB")
        raise InputError(f"{where} has shape {tuple(shape)}, not N×H×W×3; {hint}")
    if shape[0] == 0:
        raise InputError(f"{where} holds no images (shape {tuple(shape)})")
    if shape[1] < 1 or shape[2] < 1:
        raise InputError(f"{where} has empty images (shape {tuple(shape)})")


# --------------------------------------------------------------------------------------------- sources

class ImageSource(ABC):
    """An ordered set of uint8 RGB images of one resolution."""

    kind: str = "?"
    path: Path | None = None
    transform: str | None = None      # preprocessing applied while reading (part of the content hash)

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def resolution(self) -> tuple[int, int]:
        """(height, width) of every image."""

    @abstractmethod
    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """uint8 batches B×H×W×3 of images [start, stop) in order, the k-th starting at start + k·batch_size."""

    @abstractmethod
    def _content_hash(self, memo: HashMemo | None) -> str: ...

    def content_hash(self, memo: HashMemo | None = None) -> str:
        """sha256 identifying the images (computed once per source object, memoised on disk for files)."""
        if getattr(self, "_hash", None) is None:
            self._hash = self._content_hash(memo)
        return self._hash

    @abstractmethod
    def image(self, index: int) -> np.ndarray:
        """One H×W×3 uint8 image (random access; used by the cross-check backends)."""

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"in-memory array {len(self)}×{self.resolution}"

    def file_sha256(self, memo: HashMemo | None = None) -> str | None:
        """sha256 of the file itself (for the result record), None for folders and arrays."""
        return None


class _ArrayBacked(ImageSource):
    """Images held by one N×H×W×3 uint8 array (in memory or memory-mapped) in `self.array`."""

    array: np.ndarray

    def __len__(self) -> int:
        return len(self.array)

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.array.shape[1:3])

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else stop
        for first in range(start, stop, batch_size):
            yield np.ascontiguousarray(self.array[first:min(first + batch_size, stop)])

    def image(self, index: int) -> np.ndarray:
        return np.asarray(self.array[index])


class _HashedFile:
    """A source identified by the sha256 of its one file (memoised by the file's stat stamp)."""

    path: Path

    def file_sha256(self, memo: HashMemo | None = None) -> str:
        return file_sha256(self.path, memo)

    def _content_hash(self, memo: HashMemo | None) -> str:
        return self.file_sha256(memo)


class ArraySource(_ArrayBacked):
    kind = "array"

    def __init__(self, array, name: str = "in-memory array"):
        if hasattr(array, "detach"):                 # a torch tensor
            array = array.detach().cpu().numpy()
        array = np.asarray(array)
        check_layout(array.shape, array.dtype, name, array)
        self.array = array
        self.name = name

    def _content_hash(self, memo: HashMemo | None) -> str:
        digest = hashlib.sha256(f"array {self.array.shape} {self.array.dtype}\n".encode())
        for batch in self.batches(1024):
            digest.update(batch.tobytes())
        return digest.hexdigest()

    def describe(self) -> str:
        return f"{self.name} {self.array.shape}"


class NpySource(_HashedFile, _ArrayBacked):
    kind = "npy"

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.array = np.load(self.path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise InputError(f"{self.path} is not a readable .npy file ({error}): truncated or corrupt; "
                             f"re-create it with `np.save(path, images)`") from None
        check_layout(self.array.shape, self.array.dtype, str(self.path),
                     self.array[:64] if self.array.ndim and self.array.dtype != np.uint8 else None)


def _read_npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an .npy stream positioned at its start; leaves it at the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    return np.lib.format._read_array_header(stream, version)    # format 3.0 (utf-8 field names)


def _read_exact(handle, size: int, where: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = handle.read(size - len(data))
        if not chunk:
            raise InputError(f"{where} ends early ({len(data)} of {size} bytes read): the file is truncated; "
                             f"re-create it ({_NPZ_HINT})")
        data += chunk
    return bytes(data)


class NpzSource(_HashedFile, ImageSource):
    """`arr_0` (or another key) of an `.npz`, as ADM reads it: header first, then batches of rows."""

    kind = "npz"

    def __init__(self, path: Path, key: str = "arr_0"):
        self.path = Path(path)
        self.key = key
        member = f"{key}.npy"
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = archive.namelist()
                if member not in names:
                    keys = sorted(name[:-4] for name in names if name.endswith(".npy"))
                    raise InputError(f"{self.path} has no {key!r} array (it has {keys}); {_NPZ_HINT}")
                info = archive.getinfo(member)
                with archive.open(member) as stream:
                    shape, fortran, dtype = _read_npy_header(stream)
                    head = None
                    if dtype != np.uint8 and not dtype.hasobject and len(shape) >= 1:
                        rows = min(64, shape[0])
                        count = rows * int(np.prod(shape[1:], dtype=np.int64))
                        head = np.frombuffer(_read_exact(stream, count * dtype.itemsize, str(self.path)),
                                             dtype=dtype)
        except InputError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError) as error:
            raise InputError(f"{self.path} is not a readable .npz file ({type(error).__name__}: {error}): it is "
                             f"truncated or corrupt; re-create it ({_NPZ_HINT})") from None
        check_layout(shape, dtype, f"{self.path} [{key}]", head)
        if fortran:
            raise InputError(f"{self.path} [{key}] is stored in Fortran order; save a C-ordered array "
                             f"(`np.ascontiguousarray(images)`)")
        self.shape = tuple(shape)
        self.dtype = dtype
        data_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self._offset = self._data_offset(info, data_bytes) if info.compress_type == zipfile.ZIP_STORED else None
        self._crc = info.CRC
        if self._offset is not None and self._offset + data_bytes > self.path.stat().st_size:
            raise InputError(f"{self.path} [{key}] is truncated (needs {data_bytes} bytes of image data); "
                             f"re-create it ({_NPZ_HINT})")

    def _data_offset(self, info: zipfile.ZipInfo, data_bytes: int) -> int | None:
        """Byte offset of the array data inside the file (stored members only), for memory mapping."""
        with open(self.path, "rb") as handle:
            handle.seek(info.header_offset)
            local = handle.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            self._member_start = info.header_offset + 30 + name_len + extra_len
            handle.seek(self._member_start)
            _read_npy_header(handle)
            offset = handle.tell()
        header_len = offset - self._member_start
        return offset if header_len + data_bytes == info.file_size else None

    def file_sha256(self, memo: HashMemo | None = None) -> str:
        """sha256 of the file. A memory map never sees the zip CRC that `np.load` checks, so for a stored member
        the hashing pass checks it too: a file damaged after it was written is refused, not scored."""
        if self._offset is None:                  # compressed: zipfile checks the CRC while streaming
            return file_sha256(self.path, memo)
        stamp = {"kind": "npz-sha256-crc", "member": self.key, **file_stamp(self.path)}
        hit = memo.get(stamp) if memo else None
        if hit:
            return hit["sha256"]
        digest, crc = hashlib.sha256(), 0
        first, end, position = self._member_start, self._offset + int(np.prod(self.shape, dtype=np.int64)), 0
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                low, high = max(first, position), min(end, position + len(block))
                if low < high:
                    crc = zlib.crc32(memoryview(block)[low - position:high - position], crc)
                position += len(block)
        if crc != self._crc:
            raise InputError(f"{self.path} [{self.key}] fails its zip CRC (computed {crc:08x}, the archive records "
                             f"{self._crc:08x}): the file was changed or damaged after it was written; re-create it "
                             f"({_NPZ_HINT})")
        if memo:
            memo.put(stamp, {"sha256": digest.hexdigest()})
            memo.put({"kind": "file-sha256", **file_stamp(self.path)}, {"sha256": digest.hexdigest()})
        return digest.hexdigest()

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.shape[1:3])

    def _memmap(self) -> np.memmap:
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._offset, shape=self.shape)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else stop
        if self._offset is not None:
            array = self._memmap()
            for first in range(start, stop, batch_size):
                yield np.array(array[first:min(first + batch_size, stop)])
            return
        row = int(np.prod(self.shape[1:]))
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{self.key}.npy") as stream:
            _read_npy_header(stream)
            # a compressed member has no random access: the images before `start` are read and dropped
            firsts = [*range(0, start, batch_size), *range(start, stop, batch_size)]
            for first, end in zip(firsts, [*firsts[1:], stop]):
                try:
                    data = _read_exact(stream, (end - first) * row, f"{self.path} [{self.key}]")
                except (zipfile.BadZipFile, EOFError, OSError) as error:   # bad CRC, broken deflate stream
                    raise InputError(f"{self.path} [{self.key}] is corrupt near image {first} ({error}); "
                                     f"re-create it ({_NPZ_HINT})") from None
                if first >= start:
                    yield np.frombuffer(data, dtype=np.uint8).reshape(end - first, *self.shape[1:])

    def image(self, index: int) -> np.ndarray:
        if self._offset is None:
            raise InputError(f"{self.path} is a compressed .npz, which has no random access; the cross-check "
                             f"backends need `np.savez` (not savez_compressed) or a folder of PNGs")
        return np.asarray(self._memmap()[index])


class FolderSource(ImageSource):
    """PNG/JPEG files of one folder (not its subfolders), in file-name order, decoded with PIL to RGB.

    `crop_to=R` applies ADM's centre crop to R×R (`pixeldit.data.center_crop_arr`) to every image, for
    building references from raw photographs; without it every image must already have one resolution.
    """

    kind = "folder"

    def __init__(self, path: Path, crop_to: int | None = None, workers: int | None = None):
        self.path = Path(path)
        self.files = sorted(entry for entry in self.path.iterdir()
                            if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise InputError(f"{self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)}; subfolders are not "
                             f"searched); point at the folder that holds the files, or pass an .npz with arr_0")
        self.crop_to = crop_to
        self.transform = f"adm-center-crop-{crop_to}" if crop_to else None
        self.workers = workers or min(8, os.cpu_count() or 1)
        if crop_to:
            self._resolution = (crop_to, crop_to)
        else:
            first = self._open(self.files[0])
            self._resolution = (first.height, first.width)

    def _open(self, file: Path) -> Image.Image:
        try:
            return Image.open(file)
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"{file} is not a readable image ({error}); delete or re-save it") from None

    def _decode(self, file: Path) -> np.ndarray:
        image = self._open(file)
        try:
            image = image.convert("RGB")
        except OSError as error:                      # truncated PNG/JPEG data
            raise InputError(f"{file} is truncated or corrupt ({error}); delete or re-save it") from None
        if self.crop_to:

            return center_crop_arr(image, self.crop_to)
        if (image.height, image.width) != self._resolution:
            raise InputError(f"mixed resolutions in {self.path}: {file.name} is {image.width}×{image.height} but "
                             f"{self.files[0].name} is {self._resolution[1]}×{self._resolution[0]}; every sample "
                             f"must have one resolution (regenerate, or build the reference with --res)")
        return np.asarray(image)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def resolution(self) -> tuple[int, int]:
        return self._resolution

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else stop
        with ThreadPoolExecutor(self.workers) as pool:
            for first in range(start, stop, batch_size):
                yield np.stack(list(pool.map(self._decode, self.files[first:min(first + batch_size, stop)])))

    def image(self, index: int) -> np.ndarray:
        return self._decode(self.files[index])

    def _content_hash(self, memo: HashMemo | None) -> str:
        stats = [(file.name, file.stat()) for file in self.files]
        stamps = [(name, stat.st_size, stat.st_mtime_ns, stat.st_ino) for name, stat in stats]
        stamp = {"kind": "folder-sha256", "path": str(self.path.resolve()), "files": stamps,
                 "transform": self.transform}
        hit = memo.get(stamp) if memo else None
        if hit:
            return hit["sha256"]
        digest = hashlib.sha256(f"folder transform={self.transform}\n".encode())
        for file in self.files:
            digest.update(file.name.encode() + b"\0" + file_sha256(file).encode() + b"\n")
        value = digest.hexdigest()
        if memo:
            memo.put(stamp, {"sha256": value})
        return value


class DatasetSource(ImageSource):
    """A dataset prepared by `pixeldit-bench data prepare` (optionally one split); hashed via its manifest."""

    kind = "dataset"

    def __init__(self, path: Path, split: str | None = None):

        self.path = Path(path)
        try:
            self.dataset = open_dataset(self.path, split)
        except DatasetError as error:
            raise InputError(str(error)) from None
        self.split = split
        check_layout((len(self.dataset), self.dataset.resolution, self.dataset.resolution, 3), np.uint8,
                     f"{self.path} (split {split})")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.dataset.resolution, self.dataset.resolution)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else stop
        for first in range(start, stop, batch_size):
            yield self.dataset.get_batch(np.arange(first, min(first + batch_size, stop)))[0]

    def image(self, index: int) -> np.ndarray:
        return self.dataset[index][0]

    def _content_hash(self, memo: HashMemo | None) -> str:
        manifest = self.dataset.manifest
        blob = {"shards": [shard["sha256"] for shard in manifest["shards"]], "range": [self.dataset.start,
                                                                                        self.dataset.stop]}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        return f"{self.path}" + (f" (split {self.split})" if self.split else "")


def open_images(images, *, name: str = "samples", crop_to: int | None = None, split: str | None = None) -> ImageSource:
    """Wrap `images` (path to .npz/.npy/folder/prepared dataset, an array, or a source) as an ImageSource."""
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if not path.exists():
            raise InputError(f"{name} {path} does not exist")
        if path.is_dir():
            if (path / "dataset.json").is_file():
                source = DatasetSource(path, split)
                if crop_to and source.resolution != (crop_to, crop_to):
                    raise InputError(f"{path} is a prepared dataset at {source.resolution[0]}×{source.resolution[1]}, "
                                     f"not {crop_to}×{crop_to}; prepare it at that resolution "
                                     f"(`pixeldit-bench data prepare SRC --out DIR --res {crop_to}`)")
                return source
            return FolderSource(path, crop_to=crop_to)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return NpzSource(path)
        if suffix == ".npy":
            return NpySource(path)
        raise InputError(f"{name} {path} is neither a folder, an .npz nor an .npy file")
    return ArraySource(images, name=f"{name} array")
