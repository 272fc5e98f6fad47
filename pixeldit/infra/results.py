"""One result format for every evaluator: values plus the protocol card needed to reproduce them.

A result JSON holds::

    {"schema": "pixeldit-bench/result/v1",
     "evaluator": {"name": "imagenet", "version": "1", "backend": "adm"},
     "values": {"fid": 3.94, "is": null, ...},          # null = not computed, see "unavailable"
     "unavailable": {"is": "unavailable: logits weights not installed"},
     "protocol": {...},                                   # extractor, weight checksums, reference set, counts, seeds
     "samples": {"path": ..., "sha256": ..., "count": ...},
     "model": {...}, "sampler": {...}, "run": {...},      # filled by whoever produced the samples (may be {})
     "env": {"packages": {...}, "git_commit": ..., "date": ..., "python": ..., "platform": ...}}

Tables compare two results only when their protocol cards agree (see `protocol_key`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping

SCHEMA = "pixeldit-bench/result/v1"
_REPORTED_PACKAGES = ("pixeldit-bench", "torch", "torch-fidelity", "clean-fid", "numpy", "scipy",
                      "open-clip-torch", "transformers", "mmdet", "mmcv", "diffusers")


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """Commit of the checkout this package runs from, with '-dirty' when it has local changes."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Package versions, commit, date and platform: what a reader needs to rerun the numbers."""
    packages = {}
    for name in _REPORTED_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"packages": packages, "git_commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform()}


def make_result(evaluator: str, version: str, values: Mapping[str, float | None], protocol: Mapping[str, Any],
                *, backend: str | None = None, unavailable: Mapping[str, str] | None = None,
                samples: Mapping[str, Any] | None = None, model: Mapping[str, Any] | None = None,
                sampler: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble a result record; every value that is None must say why in `unavailable`."""
    unavailable = dict(unavailable or {})
    missing = [key for key, value in values.items() if value is None and key not in unavailable]
    if missing:
        raise ValueError(f"values {missing} are None but `unavailable` gives no reason for them")
    record = {"schema": SCHEMA,
              "evaluator": {"name": evaluator, "version": str(version), "backend": backend},
              "values": dict(values), "unavailable": unavailable, "protocol": dict(protocol),
              "samples": dict(samples or {}), "model": dict(model or {}), "sampler": dict(sampler or {}),
              "run": dict(run or {}), "env": environment()}
    if extra:
        record["extra"] = dict(extra)
    return record


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Load a result JSON, refusing files that are not pixeldit-bench results."""
    with open(path) as handle:
        try:
            record = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:   # UnicodeDecodeError: a binary file
            raise ValueError(f"{path} is not valid JSON ({error}); delete it and rerun the evaluation") from None
    schema = record.get("schema") if isinstance(record, dict) else None
    if schema != SCHEMA:
        raise ValueError(f"{path} has schema {schema!r}, expected {SCHEMA!r}")
    return record


def protocol_key(record: Mapping[str, Any]) -> str:
    """A short hash of evaluator name/backend/version and protocol card: equal keys are comparable."""
    evaluator = record["evaluator"]
    blob = json.dumps({"evaluator": [evaluator["name"], evaluator.get("backend"), evaluator["version"]],
                       "protocol": record["protocol"]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
