"""Registry of published numbers: versioned YAML files under `published/`, validated row by row.

The numbers are data, not code (lm-eval keeps its benchmarks the same way): fixing a value means
editing one YAML line and bumping that file's `version`. Every row must name its source; the
loader rejects a row with a missing field, a non-numeric value or an unknown key, naming the file
and the row so the fix is one edit away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

PUBLISHED_DIR = Path(__file__).with_name("published")

METRIC_KEYS = ("fid", "sfid", "is", "precision", "recall", "fd_dinov2", "geneval", "dpg")
MODEL_TYPES = ("latent", "pixel")
# PixelDiT's tools/compute_flops.py counts 2 FLOPs per multiply-accumulate; DiT/JiT papers count MACs.
GFLOPS_CONVENTIONS = ("2flops_per_mac", "mac", "unknown")

_REQUIRED_FIELDS = ("method", "type", "setting", "values", "source")
_OPTIONAL_TEXT_FIELDS = ("params_note", "nfe", "sampler", "confidence", "note")
_OPTIONAL_NUMBER_FIELDS = ("params_m", "epochs")
_KNOWN_FIELDS = set(_REQUIRED_FIELDS) | set(_OPTIONAL_TEXT_FIELDS) | set(_OPTIONAL_NUMBER_FIELDS) | {
    "gflops", "in_pixeldit_table"}


class PublishedRegistryError(ValueError):
    """A registry file or row is malformed; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class Gflops:
    """A published compute figure together with the counting convention it was published in."""

    value: float
    convention: str

    def as_2flops_per_mac(self) -> float | None:
        """The value in PixelDiT's convention (2 FLOPs per MAC), or None when the convention is unknown."""
        if self.convention == "2flops_per_mac":
            return self.value
        if self.convention == "mac":
            return 2 * self.value
        return None


@dataclass(frozen=True)
class PublishedRow:
    """One published result: a method in one setting, with where the numbers come from."""

    method: str
    type: str
    setting: str
    values: Mapping[str, float]
    source: str
    registry: str                      # "<file> v<version>", so a table can cite the registry state
    params_m: float | None = None
    params_note: str | None = None
    gflops: Gflops | None = None
    epochs: float | None = None
    nfe: str | None = None
    sampler: str | None = None
    confidence: str | None = None
    note: str | None = None
    in_pixeldit_table: bool = False
    # What the sources state about the protocol of every row of the file (its top-level `card`), laid out like
    # a result JSON's sections ({"evaluator": {...}, "protocol": {...}}) so `compare` reads both the same way.
    card: Mapping[str, Any] = field(default_factory=dict)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_row(raw: Any, where: str, registry: str, card: Mapping[str, Any]) -> PublishedRow:
    """Validate one YAML row; `where` ("file row N (method)") prefixes every error."""
    if not isinstance(raw, Mapping):
        raise PublishedRegistryError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise PublishedRegistryError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_KNOWN_FIELDS)}")
    missing = [name for name in _REQUIRED_FIELDS if raw.get(name) in (None, "", {})]
    if missing:
        raise PublishedRegistryError(f"{where}: missing required field(s) {missing}; every row needs "
                                     f"{list(_REQUIRED_FIELDS)} (source = arXiv id + table, or repository README)")
    for name in ("method", "setting", "source"):
        if not isinstance(raw[name], str):
            raise PublishedRegistryError(f"{where}: field '{name}' must be text, got {raw[name]!r}")
    if raw["type"] not in MODEL_TYPES:
        raise PublishedRegistryError(f"{where}: type {raw['type']!r} is not one of {list(MODEL_TYPES)}")

    values = raw["values"]
    if not isinstance(values, Mapping):
        raise PublishedRegistryError(f"{where}: 'values' must map metric names to numbers, got {values!r}")
    for metric, value in values.items():
        if metric not in METRIC_KEYS:
            raise PublishedRegistryError(f"{where}: unknown metric {metric!r} in values; allowed: {list(METRIC_KEYS)}")
        if not _is_number(value):
            raise PublishedRegistryError(f"{where}: values.{metric} must be a number, got {value!r}; "
                                         "write ranges or doubtful numbers into 'note' instead")

    for name in _OPTIONAL_NUMBER_FIELDS:
        if raw.get(name) is not None and not _is_number(raw[name]):
            raise PublishedRegistryError(f"{where}: field '{name}' must be a number, got {raw[name]!r}")
    texts = {}
    for name in _OPTIONAL_TEXT_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, (str, int)):
            raise PublishedRegistryError(f"{where}: field '{name}' must be text, got {value!r}")
        texts[name] = None if value is None else str(value)   # nfe may be written as a bare number

    gflops = raw.get("gflops")
    if gflops is not None:
        if not isinstance(gflops, Mapping) or set(gflops) != {"value", "convention"}:
            raise PublishedRegistryError(f"{where}: 'gflops' must be {{value: <number>, convention: "
                                         f"{'|'.join(GFLOPS_CONVENTIONS)}}}, got {gflops!r}")
        if not _is_number(gflops["value"]):
            raise PublishedRegistryError(f"{where}: gflops.value must be a number, got {gflops['value']!r}")
        if gflops["convention"] not in GFLOPS_CONVENTIONS:
            raise PublishedRegistryError(f"{where}: gflops.convention {gflops['convention']!r} is not one of "
                                         f"{list(GFLOPS_CONVENTIONS)}")
        gflops = Gflops(float(gflops["value"]), gflops["convention"])

    in_table = raw.get("in_pixeldit_table", False)
    if not isinstance(in_table, bool):
        raise PublishedRegistryError(f"{where}: 'in_pixeldit_table' must be true or false, got {in_table!r}")

    return PublishedRow(method=raw["method"], type=raw["type"], setting=raw["setting"],
                        values={key: float(value) for key, value in values.items()}, source=raw["source"],
                        registry=registry, params_m=raw.get("params_m"), gflops=gflops,
                        epochs=raw.get("epochs"), in_pixeldit_table=in_table, card=card, **texts)


def load_registry_file(path: str | Path) -> list[PublishedRow]:
    """Load and validate one registry file; duplicate (method, setting, epochs) rows are an error. The optional
    top-level `card` (the protocol the sources state for every row) goes into each row's `card`."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PublishedRegistryError(f"{path.name}: not valid YAML ({error})") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("rows"), list):
        raise PublishedRegistryError(f"{path.name}: expected top-level keys 'version' and 'rows' (a list)")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise PublishedRegistryError(f"{path.name}: top-level 'version' must be an integer, got {version!r}")
    registry = f"{path.name} v{version}"
    card = document.get("card", {})
    if not isinstance(card, Mapping) or not all(isinstance(section, Mapping) for section in card.values()):
        raise PublishedRegistryError(f"{path.name}: top-level 'card' must map result sections (evaluator, protocol) "
                                     f"to mappings, as in a result JSON; got {card!r}")

    rows, seen = [], {}
    for index, raw in enumerate(document["rows"], start=1):
        method = raw.get("method", "?") if isinstance(raw, Mapping) else "?"
        where = f"{path.name} row {index} ({method})"
        row = _parse_row(raw, where, registry, card)
        identity = (row.method, row.setting, row.epochs)
        if identity in seen:
            raise PublishedRegistryError(f"{where}: duplicates row {seen[identity]} (same method, setting and "
                                         "epochs); merge them or tell them apart by 'epochs'")
        seen[identity] = index
        rows.append(row)
    return rows


def load_published(directory: str | Path = PUBLISHED_DIR, setting: str | None = None,
                   model_type: str | None = None) -> list[PublishedRow]:
    """Every published row of every `*.yaml` in `directory` (file order kept), optionally filtered."""
    files = sorted(Path(directory).glob("*.yaml"))
    if not files:
        raise PublishedRegistryError(f"no registry files (*.yaml) in {directory}")
    rows = [row for path in files for row in load_registry_file(path)]
    if setting is not None:
        known = sorted({row.setting for row in rows})
        if setting not in known:
            raise PublishedRegistryError(f"unknown setting {setting!r}; known settings: {', '.join(known)}")
        rows = [row for row in rows if row.setting == setting]
    if model_type is not None:
        if model_type not in MODEL_TYPES:
            raise PublishedRegistryError(f"unknown type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        rows = [row for row in rows if row.type == model_type]
    return rows
