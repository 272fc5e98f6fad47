"""The layout of a training run directory, read by the trainer, the sampler and `pixeldit-bench ls`.

    network-snapshot-<kimg:07d>.safetensors   EMA (+ raw) weights and metadata, every snapshot_kimg
    training-state-<kimg:07d>.pt               everything `train` needs to resume, every state_kimg
    training-state-<kimg:07d>.pt.sha256        its sha256, written after it and checked before it is loaded
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import torch

from pixeldit.infra.files import atomic_torch_save, sha256_file, write_bytes_atomic

SNAPSHOT_PATTERN = re.compile(r"network-snapshot-(\d{7})\.safetensors")
STATE_PATTERN = re.compile(r"training-state-(\d{7})\.pt$")


def snapshot_path(run_dir: Path, kimg: int) -> Path:
    return run_dir / f"network-snapshot-{kimg:07d}.safetensors"


def training_states(run_dir: Path) -> list[Path]:
    """The run's training states, oldest first."""
    return sorted(p for p in run_dir.glob("training-state-*.pt") if STATE_PATTERN.search(p.name))


def latest_state(run_dir: Path) -> Path | None:
    states = training_states(run_dir)
    return states[-1] if states else None


def state_path(run_dir: Path, kimg: int) -> Path:
    return run_dir / f"training-state-{kimg:07d}.pt"


def _checksum_file(state: Path) -> Path:
    return state.with_name(state.name + ".sha256")


def save_training_state(state: dict, run_dir: Path, kimg: int) -> Path:
    """Write a training state atomically, then its sha256 beside it."""
    path = atomic_torch_save(state, state_path(run_dir, kimg))
    write_bytes_atomic(_checksum_file(path), f"{sha256_file(path)}  {path.name}\n".encode())
    return path


def _state_problem(path: Path) -> str | None:
    """Why a training state cannot be trusted, or None. A state without its .sha256 (killed between the two
    writes, or written before checksums) is trusted if torch can load it."""
    checksum = _checksum_file(path)
    if checksum.is_file():
        expected = (checksum.read_text().split() or [""])[0]
        found = sha256_file(path)
        if found != expected:
            return f"damaged (sha256 {found}, its {checksum.name} says {expected or 'nothing'})"
    return None


def load_newest_training_state(run_dir: Path, warn: Callable[[str], None]) -> tuple[Path, dict] | None:
    """The newest training state that passes its checksum and loads, falling back (with a warning) to older
    ones; None when the run has none. Refuses to start over when states exist but none is usable."""
    problems = []
    for path in reversed(training_states(run_dir)):
        problem = _state_problem(path)
        if problem is None:
            try:
                return path, torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:   # whatever torch raises for a truncated or foreign file: unusable
                problem = f"unreadable ({type(error).__name__}: {(str(error).splitlines() or [''])[0]})"
        problems.append(f"{path.name} is {problem}")
        warn(f"{path.name} is {problem}; falling back to the previous training state")
    if problems:
        raise ValueError(f"no usable training state in {run_dir}: {'; '.join(problems)}. Move these files away to "
                         f"train again from the start (the network snapshots are kept)")
    return None


def resolve_network(run_or_checkpoint: str | os.PathLike) -> Path:
    """A run directory -> its latest `network-snapshot-<kimg>.safetensors`; a file -> itself."""
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a checkpoint file nor a run directory")
    snapshots = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := SNAPSHOT_PATTERN.fullmatch(p.name)))
    if not snapshots:
        raise FileNotFoundError(f"run directory {path} has no network-snapshot-<kimg>.safetensors yet; "
                                f"train longer or pass a checkpoint file")
    return snapshots[-1][1]
