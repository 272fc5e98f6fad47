"""Files that are whole or absent: atomic writes (bytes, JSON, torch, npz, streamed npz), hashing, disk space.

Every writer goes through `atomic_path`: a temporary file beside the target, fsynced and renamed into place,
so a killed job never leaves a half-written file under the final name. Temporaries are named
`.NAME.partial-PID@HOST-XXXXXXXX` (`temp_beside`) so the next write of NAME on the same host removes those
whose process is gone: a killed job leaves nothing behind for good.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch

_OWNER = re.compile(r"\.partial-(\d+)@(.+)-[^-]+$")   # .NAME.partial-PID@HOST-<mkstemp's random part>


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                # someone else's live process
        return True
    return True


def remove_abandoned(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed jobs on this host left beside `path` (their process no longer
    exists), warning for each; those of live processes or other hosts (a shared file system) stay."""
    path = Path(path)
    host, removed = socket.gethostname(), []
    if not path.parent.is_dir():
        return removed
    for temp in path.parent.glob(f".{glob.escape(path.name)}.partial-*"):
        owner = _OWNER.search(temp.name)
        if owner is None or owner.group(2) != host or _process_exists(int(owner.group(1))):
            continue
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        removed.append(temp)
        warnings.warn(f"removed {temp}, left by a job (pid {owner.group(1)}) that was stopped before it finished",
                      stacklevel=2)
    return removed


def temp_beside(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """A new hidden temporary file (or folder) beside `path`, owned by this process; the abandoned ones of
    earlier killed jobs are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(path)
    prefix = f".{path.name}.partial-{os.getpid()}@{socket.gethostname()}-"
    if directory:
        temp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        temp.chmod(0o755)                  # mkdtemp makes it private; what it becomes is shared, read-only data
        return temp
    fd, temp = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    return Path(temp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; after the block writes it, fsync and rename it into place.

    If the block raises, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    temp = temp_beside(path)
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
