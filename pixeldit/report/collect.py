"""Read every result JSON under a results directory into one pandas DataFrame (one row per file).

Files live at `metrics/<run>/<kimg>/<sampler>/<evaluator>.json` (README, "Results layout"). Run name and kimg
come from the record's `run` section first and that path second, so a result written elsewhere by
`pixeldit-bench eval` still reads; the sampler key comes from the path first (its folder name
encodes every sampling knob), then `sampler.name`. Fields the report uses, when present:

    run:     name, kimg, group (ablation group), variant (row label), epochs, dataset, resolution
    model:   name, type (latent|pixel), params (count), gflops, gflops_convention, train_pflops (training compute)
    sampler: name, steps, nfe, cfg_scale (or guidance_scale / cfg)

Dataset and resolution fall back to `protocol` (`dataset`, `resolution`, `samples.resolution`) and
to the reference file's name: `refs/<dataset>-<res>-<extractor>.npz` (README, "Results layout") or ADM's
`VIRTUAL_imagenet<res>…npz`.

The ImageNet evaluator's FID uncertainty (`extra.fid_bootstrap`, `extra.fid_vs_n`) becomes the columns
`fid_bootstrap` and `fid_vs_n` (dicts; None where a result has none); a mean over seed ranges
(`eval imagenet --seed-ranges`) has its `protocol.seed_ranges` card in the column `seed_ranges`, and its values'
`<metric>_std` / `<metric>_min` are columns like every value.

Every value becomes a column named after its key (`fid`, `is`, `overall`, ...); a metric that
was not computed is None there and its reason is in the `unavailable` column (a dict).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from pixeldit.infra.results import protocol_key, read_result

log = logging.getLogger(__name__)

GUIDANCE_KEYS = ("cfg_scale", "guidance_scale", "cfg")
_REFERENCE_NAMES = (re.compile(r"^(?P<dataset>[A-Za-z0-9]+)-(?P<resolution>\d+)-"),      # refs/<dataset>-<res>-…
                    re.compile(r"^VIRTUAL_(?P<dataset>imagenet)(?P<resolution>\d+)"))     # ADM reference batches
META_COLUMNS = ("path", "run", "kimg", "sampler", "evaluator", "backend", "evaluator_version", "protocol_key",
                "card", "dataset", "resolution", "setting", "group", "variant", "model_type", "params",
                "gflops", "gflops_convention", "train_pflops", "epochs", "guidance", "nfe", "unavailable", "fid_bootstrap",
                "fid_vs_n", "seed_ranges")


def _first(record: Mapping[str, Any], key: str, sections: tuple[str, ...]) -> Any:
    """The first non-empty `record[section][key]` over `sections`."""
    for section in sections:
        value = (record.get(section) or {}).get(key)
        if value not in (None, ""):
            return value
    return None


def _dataset_and_resolution(record: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """Where the record says it (run, protocol, model), else read off the reference file's name."""
    dataset = _first(record, "dataset", ("run", "protocol", "model"))
    resolution = _first(record, "resolution", ("run", "protocol", "model"))
    protocol = record.get("protocol") or {}
    if resolution is None:
        resolution = (protocol.get("samples") or {}).get("resolution")
    reference = protocol.get("reference")
    reference_file = reference.get("file") if isinstance(reference, Mapping) else None
    if isinstance(reference_file, str) and (dataset is None or resolution is None):
        for pattern in _REFERENCE_NAMES:
            found = pattern.match(Path(reference_file).name)
            if found:
                dataset = dataset or found["dataset"].lower()
                resolution = resolution or int(found["resolution"])
                break
    if isinstance(resolution, (list, tuple)):   # [H, W(, C)] from a protocol card: square images are the rule
        resolution = resolution[0] if resolution else None
    return dataset, resolution


def _layout_parts(path: Path, metrics_dir: Path) -> tuple[str | None, int | None, str | None]:
    """(run, kimg, sampler) from `metrics/<run>/<kimg>/<sampler>/<evaluator>.json`, None where it does not fit."""
    parts = path.relative_to(metrics_dir).parts
    if len(parts) != 4:
        return None, None, None
    run, kimg, sampler, _ = parts
    return run, int(kimg) if kimg.isdigit() else None, sampler


def setting_name(dataset: str | None, resolution: Any) -> str:
    """The setting key shared with the published registry, e.g. ('imagenet', 256) -> 'imagenet-256'."""
    if not dataset:
        return "unknown"
    return f"{str(dataset).lower()}-{resolution}" if resolution else str(dataset).lower()


def _nfe(sampler: Mapping[str, Any], guidance: float | None) -> str | None:
    """NFE as the papers write it: the sampler's own count, else steps, '×2' when CFG doubles the batch."""
    if sampler.get("nfe") is not None:
        return str(sampler["nfe"])
    steps = sampler.get("steps")
    if steps is None:
        return None
    return f"{steps}×2" if guidance not in (None, 0, 1) else str(steps)


def _bootstrap(extra: Mapping[str, Any]) -> dict[str, Any] | None:
    """extra.fid_bootstrap when it holds a usable interval (numbers for std and both percentiles)."""
    boot = extra.get("fid_bootstrap")
    if not isinstance(boot, Mapping):
        return None
    numeric = all(isinstance(boot.get(key), (int, float)) and not isinstance(boot.get(key), bool)
                  for key in ("std", "p2.5", "p97.5"))
    return dict(boot) if numeric else None


def _fid_vs_n(extra: Mapping[str, Any]) -> dict[str, Any] | None:
    curve = extra.get("fid_vs_n")
    if not isinstance(curve, Mapping) or not isinstance(curve.get("n"), list) or not isinstance(curve.get("fid"), list):
        return None
    return dict(curve) if curve["n"] and len(curve["n"]) == len(curve["fid"]) else None


def _seed_ranges(protocol: Mapping[str, Any]) -> dict[str, Any] | None:
    """protocol.seed_ranges when it says how many ranges of how many images the values average."""
    card = protocol.get("seed_ranges")
    usable = isinstance(card, Mapping) and all(isinstance(card.get(key), int) for key in ("count", "images"))
    return dict(card) if usable else None


def _row(path: Path, results_dir: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    layout_run, layout_kimg, layout_sampler = _layout_parts(path, results_dir / "metrics")
    run, model, sampler = record.get("run") or {}, record.get("model") or {}, record.get("sampler") or {}
    dataset, resolution = _dataset_and_resolution(record)
    guidance = next((sampler[key] for key in GUIDANCE_KEYS if sampler.get(key) is not None), None)
    kimg = run["kimg"] if run.get("kimg") is not None else layout_kimg
    row = {
        "path": path.relative_to(results_dir).as_posix(),
        "run": run.get("name") or layout_run or path.parent.relative_to(results_dir).as_posix(),
        "kimg": None if kimg is None else int(kimg),
        "sampler": layout_sampler or sampler.get("name") or "default",
        "evaluator": record["evaluator"]["name"],
        "backend": record["evaluator"].get("backend"),
        "evaluator_version": record["evaluator"].get("version"),
        "protocol_key": protocol_key(record),
        "card": {"evaluator": record["evaluator"], "protocol": record["protocol"]},
        "dataset": dataset,
        "resolution": resolution,
        "setting": setting_name(dataset, resolution),
        "group": run.get("group"),
        "variant": run.get("variant") or model.get("name"),
        "model_type": model.get("type"),
        "params": model.get("params"),
        "gflops": model.get("gflops"),
        "gflops_convention": model.get("gflops_convention", "unknown"),
        "train_pflops": model.get("train_pflops"),
        "epochs": run.get("epochs"),
        "guidance": guidance,
        "nfe": _nfe(sampler, guidance),
        "unavailable": dict(record.get("unavailable") or {}),
        "fid_bootstrap": _bootstrap(record.get("extra") or {}),
        "fid_vs_n": _fid_vs_n(record.get("extra") or {}),
        "seed_ranges": _seed_ranges(record.get("protocol") or {}),
    }
    for key, value in (record.get("values") or {}).items():
        if key in row:
            raise ValueError(f"{path}: value name {key!r} collides with report column {key!r}; "
                             "rename the metric in the evaluator")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{path}: values.{key} is {value!r}, not a number (or null with a reason under "
                             f"`unavailable`); rescore it with `pixeldit-bench eval` or correct the file")
        row[key] = value
    return row


def collect_results(results_dir: str | Path) -> pd.DataFrame:
    """All result JSONs under `results_dir/metrics` as one DataFrame (empty, with the meta columns, if none)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {results_dir} does not exist; pass the folder that holds "
                                "metrics/ (e.g. --results results)")
    files = sorted((results_dir / "metrics").glob("**/*.json"))
    if not files:
        log.warning("no result JSON under %s/metrics; tables will hold published rows only", results_dir)
        return pd.DataFrame(columns=list(META_COLUMNS))
    frame = pd.DataFrame([_row(path, results_dir, read_result(path)) for path in files])
    return frame.astype({"kimg": "Int64"})
