"""One shard engine for every sharded, resumable generation job (class-conditional sampling, text-to-image).

A job covers [0, n) of some unit (sample indices, prompts) in shards of `shard_size`. Shard [first, last] is
named ``shard-<first:07d>-<last:07d>``: its data files, if the layout has any, are ``<name>.<ext>`` in the output
folder, and its sidecar is ``.shards/<name>.json`` (hidden, so scorers that read the folder never see it). The
sidecar is written last and records the settings and the sha256 of every file the shard wrote, so:

- a shard is complete when its sidecar records the same settings and every file it lists still hashes to the
  recorded sha256; anything else (a kill between a data file and its sidecar, a corrupt file) is redone;
- a finished folder is verified by its sidecars tiling [0, n) with one set of settings, every file intact.

The domain modules (`pixeldit.sample`, `pixeldit.t2i_generate`) keep what is theirs: settings, noise, labels,
prompt layouts, image writing. The workflow takes shard file names from `shard_sidecars`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pixeldit.infra.devices import distributed_world
from pixeldit.infra.files import sha256_file, write_json_atomic, write_npz_streamed

SIDECAR_SCHEMA = "pixeldit-bench/shard/v2"
SIDECAR_DIR = ".shards"
SHARD_NAME = re.compile(r"shard-(\d{7})-(\d{7})")


class ShardTilingError(ValueError):
    """Every shard is readable, but together they do not tile [0, n): a gap, an overlap, a shard across n."""


# ------------------------------------------------------------------------------------------------
# Plan


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[(first, last)] inclusive ranges covering [0, n)."""
    if n < 1 or shard_size < 1:
        raise ValueError(f"n and shard_size must be >= 1, got n={n}, shard_size={shard_size}")
    return [(first, min(first + shard_size, n) - 1) for first in range(0, n, shard_size)]


def parse_shard_ids(text: str | None) -> list[int] | None:
    """'0,3,5-7' -> [0, 3, 5, 6, 7]; None or '' -> None (all shards). `ranks_shards` checks they exist."""
    if text is None or not text.strip():
        return None
    ids: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f"cannot read shard list {text!r}; write ids and ranges like '0,3,5-7'")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:   # '5-3' would select nothing and exit 0 having written nothing
            raise ValueError(f"shard range {part.strip()!r} in {text!r} runs backwards; write it as '{last}-{first}'")
        ids.extend(range(first, last + 1))
    return sorted(set(ids))


def ranks_shard_ids(num_shards: int, shard_ids: Sequence[int] | None, description: str) -> list[int]:
    """The chosen shard ids (all when None) this process fills: under torchrun every WORLD_SIZE-th of them.
    `description` says what the shards are in the error, e.g. 'this run has 5 shards'."""
    chosen = sorted(set(range(num_shards) if shard_ids is None else shard_ids))
    bad = [i for i in chosen if not 0 <= i < num_shards]
    if bad:
        raise ValueError(f"shard ids {bad} do not exist: {description} (ids 0..{num_shards - 1})")
    rank, world = distributed_world()
    return chosen[rank::world]


# ------------------------------------------------------------------------------------------------
# Naming


NAME_TEMPLATE = "shard-{first}-{last}"   # first / last zero-padded to 7 digits


def shard_name(first: int, last: int) -> str:
    return NAME_TEMPLATE.format(first=f"{first:07d}", last=f"{last:07d}")


def shard_file(out_dir: str | os.PathLike, first: int, last: int, suffix: str = ".npz") -> Path:
    """A shard's data file in the output folder (for layouts that store a shard as one file)."""
    return Path(out_dir) / f"{shard_name(first, last)}{suffix}"


def sidecar_path(out_dir: str | os.PathLike, first: int, last: int) -> Path:
    return Path(out_dir) / SIDECAR_DIR / f"{shard_name(first, last)}.json"


def sidecar_template(out_dir: str) -> str:
    """The sidecar path of any shard of out_dir with {first} / {last} placeholders (a Snakemake output pattern)."""
    return f"{out_dir}/{SIDECAR_DIR}/{NAME_TEMPLATE}.json"


def shard_sidecars(out_dir: str | os.PathLike, n: int, shard_size: int) -> list[str]:
    """Every sidecar a finished job of [0, n) leaves: what the workflow's merge rules wait for."""
    return [str(sidecar_path(out_dir, first, last)) for first, last in shard_ranges(n, shard_size)]


# ------------------------------------------------------------------------------------------------
# Sidecars and completeness


def write_sidecar(out_dir: str | os.PathLike, first: int, last: int, settings: dict, files: Sequence[Path],
                  **extra) -> Path:
    """Record the shard as done; call it after every file in `files` (paths under out_dir) is written."""
    out_dir = Path(out_dir)
    return write_json_atomic(sidecar_path(out_dir, first, last), {
        "schema": SIDECAR_SCHEMA, "first": first, "last": last, "settings": settings,
        "files": {Path(path).relative_to(out_dir).as_posix(): sha256_file(path) for path in files}, **extra})


def read_sidecar(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _damaged_file(out_dir: Path, sidecar: dict) -> str | None:
    """What is wrong with the first file the sidecar lists that is missing or changed, None when all are intact."""
    for name, digest in sidecar.get("files", {}).items():
        path = out_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != digest:
            return f"{name} does not match the sha256 in its sidecar (corrupt, changed or partly written)"
    return None


def shard_is_complete(out_dir: str | os.PathLike, first: int, last: int, settings: dict) -> bool:
    """Sidecar present with these settings, and every file it lists present with its recorded sha256."""
    out_dir = Path(out_dir)
    sidecar = read_sidecar(sidecar_path(out_dir, first, last))
    return (sidecar is not None and sidecar.get("schema") == SIDECAR_SCHEMA and sidecar.get("settings") == settings
            and _damaged_file(out_dir, sidecar) is None)


def _differences(found: dict, expected: dict) -> dict:
    return {key: (found.get(key), expected.get(key)) for key in sorted(set(found) | set(expected))
            if found.get(key) != expected.get(key)}


def refuse_old_layout(out_dir: str | os.PathLike) -> None:
    """Refuse a folder written by an older shard layout (sidecars beside `.npz` shards, 5-digit names, schema v1)
    instead of mixing it with this one."""
    out_dir = Path(out_dir)
    old = sorted(out_dir.glob("shard-*.json"))
    for path in sorted((out_dir / SIDECAR_DIR).glob("*.json")):
        sidecar = read_sidecar(path)
        if SHARD_NAME.fullmatch(path.stem) is None or (sidecar is not None and sidecar.get("schema") != SIDECAR_SCHEMA):
            old.append(path)
    if old:
        raise ValueError(f"{old[0]} is from an older shard layout ({len(old)} such files); this version writes "
                         f"{SIDECAR_SCHEMA} sidecars as {SIDECAR_DIR}/shard-<first:07d>-<last:07d>.json. Delete the "
                         f"shards in {out_dir} (or the whole folder) and generate them again")


def pending_shards(out_dir: str | os.PathLike, shards: Sequence[tuple[int, int]], settings: dict,
                   refuse_foreign: bool = True) -> list[tuple[int, int]]:
    """The shards of `shards` that are not complete for `settings`. With `refuse_foreign`, any sidecar in the folder
    that records other settings is an error (two runs must not share a folder); without, such shards are redone."""
    out_dir = Path(out_dir)
    refuse_old_layout(out_dir)
    if refuse_foreign:
        for path in sorted((out_dir / SIDECAR_DIR).glob("shard-*.json")):
            sidecar = read_sidecar(path)
            if sidecar is not None and sidecar.get("settings") != settings:
                raise ValueError(f"{path} was sampled with other settings "
                                 f"{_differences(sidecar.get('settings') or {}, settings)} (found, wanted); "
                                 f"use another output directory or delete those shards")
    return [(first, last) for first, last in shards if not shard_is_complete(out_dir, first, last, settings)]


# ------------------------------------------------------------------------------------------------
# Verification


@dataclasses.dataclass(frozen=True)
class Shard:
    first: int
    last: int
    sidecar: dict

    @property
    def name(self) -> str:
        return shard_name(self.first, self.last)

    @property
    def files(self) -> dict[str, str]:
        """{path relative to the output folder: sha256}"""
        return self.sidecar["files"]


def _read_shards(out_dir: Path, command: str) -> list[Shard]:
    """Every shard in out_dir, each checked against its own sidecar; data files without a sidecar are refused."""
    refuse_old_layout(out_dir)
    shards = []
    for path in sorted((out_dir / SIDECAR_DIR).glob("shard-*.json")):
        first, last = (int(group) for group in SHARD_NAME.fullmatch(path.stem).groups())
        sidecar = read_sidecar(path)
        if sidecar is None:
            raise ValueError(f"{path} is not readable JSON; delete it and rerun the same {command} command")
        if (sidecar.get("first"), sidecar.get("last")) != (first, last):
            raise ValueError(f"{path.name}: its sidecar says {sidecar.get('first')}..{sidecar.get('last')}; "
                             f"delete the shard's files and sidecar and rerun the same {command} command")
        damage = _damaged_file(out_dir, sidecar)
        if damage:
            raise ValueError(f"{damage}; rerun the same {command} command to redo that shard")
        shards.append(Shard(first, last, sidecar))
    known = {shard.name for shard in shards}
    for path in sorted(out_dir.glob("shard-*")):
        stem = path.name.split(".")[0]
        if SHARD_NAME.fullmatch(stem) and stem not in known:
            raise ValueError(f"{path.name} has no readable sidecar {SIDECAR_DIR}/{stem}.json (an interrupted write); "
                             f"rerun the same {command} command to redo it")
    if not shards:
        raise FileNotFoundError(f"no shard sidecars under {out_dir / SIDECAR_DIR}; run {command} first")
    return sorted(shards, key=lambda shard: (shard.first, shard.last))


def verified_shards(out_dir: str | os.PathLike, n: int | None = None, *, unit: str = "indices",
                    command: str = "`pixeldit-bench sample`") -> list[Shard]:
    """The shards tiling [0, n) (all shards when n is None), refusing corrupt or unfinished shards, mixed
    settings, gaps, overlaps and shards straddling n. `unit` names what the indices count, `command` what redoes
    a shard, both for the errors."""
    shards = _read_shards(Path(out_dir), command)
    reference = shards[0]
    for shard in shards[1:]:
        if shard.sidecar["settings"] != reference.sidecar["settings"]:
            raise ValueError(f"{shard.name} and {reference.name} were made with different settings "
                             f"{_differences(shard.sidecar['settings'], reference.sidecar['settings'])}; "
                             f"delete the stray shards")
    if n is not None:
        straddling = [shard.name for shard in shards if shard.first < n <= shard.last]
        if straddling:
            raise ShardTilingError(f"{straddling} cross n={n}; merge with n at a shard boundary")
        shards = [shard for shard in shards if shard.last < n]
    expected_first, previous = 0, None
    for shard in shards:
        if shard.first > expected_first:
            after = f"after {previous.name}" if previous else "at the start"
            raise ShardTilingError(f"gap: {unit} {expected_first}..{shard.first - 1} are missing {after} (next is "
                                   f"{shard.name}): not generated yet; run {command} for the missing shards")
        if shard.first < expected_first:  # two shards claim the same indices (e.g. runs with different --shard-size)
            raise ShardTilingError(f"{shard.name} overlaps {previous.name}: {unit} {shard.first}.."
                                   f"{min(shard.last, expected_first - 1)} were generated twice; delete one of them")
        expected_first, previous = shard.last + 1, shard
    if n is not None and expected_first < n:
        raise ShardTilingError(f"gap: {unit} {expected_first}..{n - 1} are missing after {previous.name}: "
                               f"not generated yet; run {command} for the missing shards")
    return shards


# ------------------------------------------------------------------------------------------------
# Merge


def load_array(path: Path, name: str) -> np.ndarray:
    with np.load(path) as data:
        return data[name]


def _npz_members(path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """{array name: (dtype, shape)} of an uncompressed .npz, from the .npy headers alone."""
    members = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            members[info.filename.removesuffix(".npy")] = (dtype, shape)
    return members


def _chunks(shard_files: Sequence[Path], name: str) -> Iterator[np.ndarray]:
    return (load_array(shard, name) for shard in shard_files)


def merge_npz(path: str | os.PathLike, shard_files: Sequence[Path]) -> Path:
    """One .npz whose every array is the shards' arrays concatenated in order, streamed one shard at a time."""
    members = [_npz_members(shard) for shard in shard_files]
    if any(member.keys() != members[0].keys() for member in members):
        raise ValueError(f"the shards hold different arrays ({sorted(members[0])} in {shard_files[0].name}); "
                         f"delete the stray shards and generate them again")
    return write_npz_streamed(path, {
        name: (dtype, (sum(member[name][1][0] for member in members), *shape[1:]), _chunks(shard_files, name))
        for name, (dtype, shape) in members[0].items()})
