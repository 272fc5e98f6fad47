"""One registry of every external file the harness can use (weights, reference batches, question sets).

Each entry names its URL, file name, size, checksum and licence. Loading goes through `resolve`, which
fails fast (no network) with the file's name and the command that fetches it; `fetch` downloads on a
connected machine and verifies the checksum before the file becomes visible under its final name.
Evaluators register their own files with `register_weight` in their own modules.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    """An external file the harness needs is not on this machine."""


class ChecksumError(ValueError):
    """A file on disk does not match the checksum in the registry."""


@dataclasses.dataclass(frozen=True)
class WeightFile:
    name: str                 # registry key, e.g. "inception-fid"
    url: str                  # where `fetch` downloads it from
    filename: str             # name under the weights directory
    licence: str
    sha256: str | None = None
    git_blob: str | None = None   # git blob id, for files verified against a repository (DPG-Bench CSV)
    size: int | None = None
    description: str = ""


WEIGHTS: dict[str, WeightFile] = {}


def register_weight(entry: WeightFile) -> WeightFile:
    """Add an entry; registering the same name twice with different content is an error."""
    existing = WEIGHTS.get(entry.name)
    if existing is not None and existing != entry:
        raise ValueError(f"weight {entry.name!r} is already registered with different content")
    WEIGHTS[entry.name] = entry
    return entry


def weights_dir() -> Path:
    """Where external files live: $PIXELDIT_WEIGHTS, else ~/.cache/pixeldit-bench/weights."""
    root = os.environ.get("PIXELDIT_WEIGHTS") or Path.home() / ".cache" / "pixeldit-bench" / "weights"
    return Path(root)


def get_entry(name: str) -> WeightFile:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weight file {name!r}; `pixeldit-bench weights list` shows the registry "
                       f"({', '.join(sorted(WEIGHTS)) or 'empty'})") from None


def path_of(name: str) -> Path:
    return weights_dir() / get_entry(name).filename


def resolve(name: str) -> Path:
    """Path of a registered file that is present on disk; otherwise a clear error naming the fix."""
    path = path_of(name)
    if not path.is_file():
        entry = get_entry(name)
        raise MissingWeightsError(
            f"{entry.description or name} is not installed: expected {path}.\n"
            f"On a connected machine run `pixeldit-bench weights fetch {name}` (downloads {entry.url}),\n"
            f"or copy the file there by hand (set PIXELDIT_WEIGHTS to use another folder).")
    return path


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's content: sha1(b"blob <len>\\0" + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_digests(path: Path) -> dict[str, str]:
    sha256, blob = hashlib.sha256(), hashlib.sha1()
    blob.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            blob.update(block)
    return {"sha256": sha256.hexdigest(), "git_blob": blob.hexdigest()}


def verify_file(entry: WeightFile, path: Path) -> None:
    """Raise ChecksumError unless `path` matches every checksum the entry declares."""
    digests = file_digests(path)
    for kind in ("sha256", "git_blob"):
        expected = getattr(entry, kind)
        if expected and digests[kind] != expected:
            raise ChecksumError(f"{path} does not match the registry's {kind} for {entry.name!r}: "
                                f"got {digests[kind]}, expected {expected}. Delete it and fetch it again.")


def verify(name: str) -> Path:
    path = resolve(name)
    verify_file(get_entry(name), path)
    return path


def fetch(name: str, timeout: float = 60.0) -> Path:
    """Download a registered file, verify it, then move it into place (a failed download leaves nothing)."""
    entry = get_entry(name)
    target = path_of(name)
    if target.is_file():
        verify_file(entry, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as handle:
        temp = Path(handle.name)
        try:
            with urllib.request.urlopen(entry.url, timeout=timeout) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    handle.write(block)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise MissingWeightsError(f"could not download {entry.url} for {name!r}: {error}. "
                                      f"This needs a network connection; copy the file to {target} instead.") from None
    try:
        verify_file(entry, temp)
    except ChecksumError:
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, target)
    return target
