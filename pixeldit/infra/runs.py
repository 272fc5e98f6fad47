"""The layout of a training run directory, read by the trainer, the sampler and `pixeldit-bench ls`.

    network-snapshot-<kimg:07d>.safetensors   EMA (+ raw) weights and metadata, every snapshot_kimg
    training-state-<kimg:07d>.pt               everything `train` needs to resume, every state_kimg
"""
from __future__ import annotations

import os
import re
from pathlib import Path

SNAPSHOT_PATTERN = re.compile(r"network-snapshot-(\d{7})\.safetensors")
STATE_PATTERN = re.compile(r"training-state-(\d{7})\.pt$")


def snapshot_path(run_dir: Path, kimg: int) -> Path:
    return run_dir / f"network-snapshot-{kimg:07d}.safetensors"


def latest_state(run_dir: Path) -> Path | None:
    states = sorted(p for p in run_dir.glob("training-state-*.pt") if STATE_PATTERN.search(p.name))
    return states[-1] if states else None


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
