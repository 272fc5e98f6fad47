"""Network files: safetensors holding `net.*` and/or `ema.*` weights, with the model config in the header.

The same config is written beside the file as JSON for people; the header copy is the one that is read.
The header also records the sha256 of the tensor bytes (`data_sha256`), which loading checks, so a damaged
snapshot is an error naming the file, not a network with silently wrong weights. Loading checks the file's
architecture against the model it is loaded into and names both on mismatch.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from pixeldit.infra.files import atomic_path
from pixeldit.models.registry import FAMILIES, ModelConfig, build_network, family_of

FORMAT = "pixeldit-bench/network/v1"
WEIGHT_SETS = ("net", "ema")
DATA_SHA256 = "data_sha256"            # reserved header key: sha256 of the bytes after the header
_PLACEHOLDER = "0" * 64               # written first, replaced in place once the data bytes are known


def save_network(path: str | os.PathLike, config: ModelConfig, *, net: dict | None = None,
                 ema: dict | None = None, metadata: dict | None = None) -> Path:
    """Write weights (state_dicts) and config atomically: temp file, fsync, rename."""
    if net is None and ema is None:
        raise ValueError("save_network needs at least one of net= or ema=")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, seen_storage = {}, set()
    for prefix, state in (("net", net), ("ema", ema)):
        for key, value in (state or {}).items():
            value = value.detach().to("cpu").contiguous()
            if value.data_ptr() in seen_storage:  # safetensors refuses shared memory (same dict passed twice)
                value = value.clone()
            seen_storage.add(value.data_ptr())
            tensors[f"{prefix}.{key}"] = value
    if DATA_SHA256 in (metadata or {}):
        raise ValueError(f"metadata key {DATA_SHA256!r} is reserved for the weights checksum")
    header = {"format": FORMAT, "family": family_of(config), "config": json.dumps(config.to_dict()),
              DATA_SHA256: _PLACEHOLDER, **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as temp:
        save_file(tensors, temp, metadata=header)
        _rewrite_header(temp)
    sidecar = {"format": FORMAT, "family": family_of(config), "config": config.to_dict(),
               "weights": sorted({k.split(".")[0] for k in tensors}),
               **(metadata or {})}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def _data_sha256(handle, length: int) -> str:
    """sha256 of the tensor bytes, which start after the 8-byte length and the `length`-byte header."""
    handle.seek(8 + length)
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _rewrite_header(path: Path) -> None:
    """Fill in the data checksum and sort the header's keys. safetensors writes metadata keys in hash-map order,
    different on every save, so equal tensors gave different file sha256s; sorted, equal networks give equal
    bytes and provenance hashes compare them. Same content, same compact length: rewritten in place."""
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        header["__metadata__"][DATA_SHA256] = _data_sha256(handle, length)
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canonical) > length:
            raise ValueError(f"{path}: the sorted safetensors header ({len(canonical)} bytes) does not fit "
                             f"the written one ({length} bytes)")
        handle.seek(8)
        handle.write(canonical.ljust(length))            # safetensors pads its header with spaces too


def read_network_header(path: str | os.PathLike) -> tuple[ModelConfig, dict, list[str]]:
    """(config, metadata, weight sets present) of a network file, with clear errors for foreign or broken files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"network file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            keys = list(handle.keys())
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); it may be truncated or corrupt — "
                         f"re-export it (training snapshots are rewritten by rerunning the training command)") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pixeldit-bench network file (format {header.get('format')!r}); "
                         f"official checkpoints must first be converted with `pixeldit-bench weights import c2i`")
    family = header.get("family", "pixeldit")
    if family not in FAMILIES:
        raise ValueError(f"{path} holds a {family!r} network, which this version cannot build (known: {sorted(FAMILIES)})")
    config = FAMILIES[family].config_class.from_dict(json.loads(header["config"]))
    metadata = {k: json.loads(v) for k, v in header.items() if k not in ("format", "family", "config", DATA_SHA256)}
    metadata["family"] = family
    return config, metadata, sorted({key.split(".")[0] for key in keys})


def load_state(path: str | os.PathLike, which: str = "ema") -> dict[str, torch.Tensor]:
    """The `which` weight set ("ema" or "net") of a network file."""
    if which not in WEIGHT_SETS:
        raise ValueError(f"which must be one of {WEIGHT_SETS}, got {which!r}")
    _, _, present = read_network_header(path)
    if which not in present:
        raise ValueError(f"{path} holds only {present} weights, not {which!r}")
    verify_network_data(path)
    prefix = which + "."
    with safe_open(str(path), framework="pt") as handle:
        return {key[len(prefix):]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}


def verify_network_data(path: str | os.PathLike) -> None:
    """Compare the tensor bytes with the checksum their header recorded (files written before the checksum
    existed have none and are read as they are)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        expected = json.loads(handle.read(length)).get("__metadata__", {}).get(DATA_SHA256)
        if expected is None:
            return
        found = _data_sha256(handle, length)
    if found != expected:
        raise ValueError(f"{path}: the weights are damaged (their sha256 is {found}, the file's header recorded "
                         f"{expected}); rewrite it: rerun the training command for a snapshot (it resumes from "
                         f"the newest training state), or rerun `pixeldit-bench weights import` for an import")


def load_weights_into(model: torch.nn.Module, path: str | os.PathLike, which: str = "ema") -> torch.nn.Module:
    """Load a file's weights into an existing model, refusing a different architecture."""
    config, _, _ = read_network_header(path)
    if type(config) is not type(model.config) or config != model.config:
        differing = {f: (getattr(config, f, None), getattr(model.config, f, None)) for f in config.to_dict()
                     if getattr(config, f, None) != getattr(model.config, f, None)}
        raise ValueError(f"{path} holds a {config.name or 'PixelDiT'} network but the model is "
                         f"{model.config.name or 'PixelDiT'}; differing fields (file, model): {differing}")
    return _load_fitting(model, load_state(path, which), path)


def _load_fitting(model: torch.nn.Module, state: dict[str, torch.Tensor], path) -> torch.nn.Module:
    """Load `state` into `model`, or say in one line how the file's weights differ from what its header says."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = [f"{key} {tuple(state[key].shape)} (model {tuple(expected[key].shape)})"
                for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or reshaped:
        found = [f"{len(items)} {what} (e.g. {', '.join(items[:2])})" for items, what in
                 ((reshaped, "of another shape"), (missing, "missing"), (unexpected, "unexpected")) if items]
        raise ValueError(f"{path}: its weights do not fit the {model.config.name or type(model).__name__} network "
                         f"its header describes: {'; '.join(found)}; the file was written from another model — "
                         f"write it again from the network it came from (rerun the training or import command)")
    model.load_state_dict(state)
    return model


def load_network(path: str | os.PathLike, which: str = "ema") -> tuple[torch.nn.Module, dict]:
    """Build the model a network file describes and load its weights: returns (model, metadata incl. config)."""
    config, metadata, _ = read_network_header(path)
    model = _load_fitting(build_network(config), load_state(path, which), path)
    return model.eval(), {"config": config.to_dict(), **metadata}
