"""Files that are whole or absent: atomic writes (bytes, JSON, torch, npz, streamed npz), hashing, disk space.

Every writer goes through `atomic_path`: a temporary file beside the target, fsynced and renamed into place,
so a killed job never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; after the block writes it, fsync and rename it into place.

    If the block raises, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield Path(temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now, not after an hour of work, when `path` could not be written: its nearest existing ancestor
    must be a writable folder and `path` itself must not be a folder. Raises the OSError the write would."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(ancestor))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(ancestor))
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Indented JSON (unknown types as str), written atomically."""
    with atomic_path(path) as temp, open(temp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as temp:
        torch.save(obj, temp)
    return Path(path)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """np.savez, written atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)


def write_npz_streamed(path: str | os.PathLike,
                       members: Mapping[str, tuple[np.dtype, tuple[int, ...], Iterable[np.ndarray]]]) -> Path:
    """An uncompressed .npz byte-for-byte like np.savez, written one chunk at a time, atomically.

    `members`: array name -> (dtype, full shape, chunks that concatenate along axis 0 to that shape), so
    50k×512² images never have to sit in memory at once.
    """
    with atomic_path(path) as temp, zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED,
                                                    allowZip64=True) as archive:
        for name, (dtype, shape, chunks) in members.items():
            dtype = np.dtype(dtype)
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
            written = 0
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for chunk in chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=dtype)
                    member.write(memoryview(chunk).cast("B"))
                    written += len(chunk)
            if written != (shape[0] if shape else 1):
                raise ValueError(f"{name}: the chunks hold {written} rows, the header promised {shape}")
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (reference batches are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_disk_space(directory: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Fail before the work, not hours into it, when the output cannot fit."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed_bytes > free:
        raise OSError(f"{what} needs about {needed_bytes / 1e9:.2f} GB but {directory} has {free / 1e9:.2f} GB "
                      f"free; free some space, pick another --out, or sample fewer images")
