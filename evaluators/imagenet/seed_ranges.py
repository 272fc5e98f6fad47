"""Metrics over seed ranges: every sample set of a `pixeldit-bench sample --seed-ranges K` folder scored by the
ImageNet evaluator, and one result of their mean, spread and minimum.

EDM2 (Karras et al. 2024, NVlabs/edm2) computes FID over several independent seed ranges of 50,000 images and reports
the minimum; the mean and the std say how far one range's number can be trusted. Each range is scored through the
evaluator contract (`evaluators.registry.evaluate`, its own result file `range-<r>/samples-imagenet.json` beside its
samples, the feature cache), then the aggregate result holds, for every value the ranges report:

    values.<metric>        the mean over the ranges
    values.<metric>_std    the std over the ranges (ddof = 1): the spread of one range's value, not a bootstrap
    values.<metric>_min    the smallest range value: EDM2's number for FID and FD_DINOv2 (for IS, precision and
                           recall, where higher is better, the minimum is the worst range)
    extra.seed_ranges      each range's folder, first sample index, result file and values

KID's own `kid_std` (its spread over 100 subsets) stays in each range's values; the aggregate's `kid_std` is the std
over the ranges, like every other `<metric>_std`. The protocol card is the ranges' common card (they must share it)
plus `seed_ranges` (how many, the images of each, their first sample indices and these rules), so `compare` and the
report tell a mean over K ranges from a single run.

A folder's sets are found by their `samples.json` (`*/samples.npz` beside it); position k of a set holds sample index
`settings.first_index + k` (0 when absent), as `pixeldit.sample` writes them. The sets must share every sampling
setting but that index, hold the same number of images and cover disjoint indices.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.evaluate import SAMPLES_SIDECAR_SCHEMAS, VERSION, sampler_and_model
from evaluators.registry import evaluate
from pixeldit.infra.devices import current_world
from pixeldit.infra.files import check_writable, write_json_atomic
from pixeldit.infra.results import make_result, protocol_key

RANGE_RESULT = "samples-imagenet.json"     # `eval imagenet`'s default result name beside a samples.npz
SUBSET_SPREAD = ("kid_std",)               # values that are a metric's own spread, replaced by the spread over ranges
RULES = {"value": "mean over the seed ranges", "std": "std over the seed ranges, ddof = 1 (not a bootstrap)",
         "min": "minimum over the seed ranges (EDM2 reports it for FID and FD_DINOv2)",
         "ranges": "range r holds sample indices [first_index, first_index + images) of one seed; the ranges are "
                   "disjoint, so their noise is independent"}


@dataclass(frozen=True)
class SeedRange:
    """One sample set of a seed-range folder."""

    samples: Path            # its samples.npz
    first_index: int         # the sample index of its first image
    count: int
    settings: dict           # sampling settings without first_index: equal for every range of a folder

    @property
    def indices(self) -> range:
        return range(self.first_index, self.first_index + self.count)


def _read_range(sidecar_path: Path) -> SeedRange:
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ImageNetEvalError(f"cannot read {sidecar_path} ({error}); resample or `sample merge` that folder") from None
    if not isinstance(sidecar, dict) or sidecar.get("schema") not in SAMPLES_SIDECAR_SCHEMAS:
        raise ImageNetEvalError(f"{sidecar_path} is not a samples.json of `pixeldit-bench sample`")
    settings = dict(sidecar.get("settings") or {})
    first_index = settings.pop("first_index", 0)
    return SeedRange(sidecar_path.with_name(sidecar.get("file", "samples.npz")), first_index, sidecar["count"],
                     settings)


def find_seed_ranges(folder: str | os.PathLike) -> list[SeedRange]:
    """The sample sets under `folder` (one per subfolder with a samples.json), by first index, checked to be seed
    ranges of one sampling: same settings and count, disjoint indices."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageNetEvalError(f"{folder} is not a folder; pass the --out of `pixeldit-bench sample --seed-ranges K`")
    ranges = sorted((_read_range(path) for path in folder.glob("*/samples.json")), key=lambda item: item.first_index)
    if len(ranges) < 2:
        raise ImageNetEvalError(f"{folder} holds {len(ranges)} merged sample set(s) (*/samples.json); seed ranges "
                                f"need at least 2: `pixeldit-bench sample ... --seed-ranges K --out {folder}`")
    first = ranges[0]
    for other in ranges[1:]:
        if other.settings != first.settings:
            differing = sorted(key for key in set(first.settings) | set(other.settings)
                               if first.settings.get(key) != other.settings.get(key))
            raise ImageNetEvalError(f"{other.samples.parent} and {first.samples.parent} were sampled with different "
                                    f"settings ({', '.join(differing)}); seed ranges differ in their indices only")
        if other.count != first.count:
            raise ImageNetEvalError(f"{other.samples.parent} holds {other.count} images, {first.samples.parent} "
                                    f"{first.count}; seed ranges hold the same number")
    for previous, current in zip(ranges, ranges[1:]):
        if current.first_index < previous.indices.stop:
            raise ImageNetEvalError(f"{current.samples.parent} (indices from {current.first_index}) overlaps "
                                    f"{previous.samples.parent} (indices {previous.indices.start}.."
                                    f"{previous.indices.stop - 1}); seed ranges must not share samples")
    return ranges


def aggregate_seed_ranges(ranges: list[SeedRange], records: list[dict], folder: str | os.PathLike) -> dict:
    """One result record from the ranges' records: mean, std (ddof 1) and minimum of every value; see the module."""
    keys = {protocol_key(record) for record in records}
    if len(keys) > 1:
        raise ImageNetEvalError(f"the seed ranges of {folder} were scored under {len(keys)} protocol cards; score "
                                f"them in one call")
    values: dict[str, float | None] = {}
    unavailable: dict[str, str] = {}
    for metric in (key for key in records[0]["values"] if key not in SUBSET_SPREAD):
        names = (metric, f"{metric}_std", f"{metric}_min")
        per_range = [record["values"].get(metric) for record in records]
        if any(value is None for value in per_range):
            reason = next(record["unavailable"].get(metric) for record in records if record["values"].get(metric) is None)
            values.update(dict.fromkeys(names))
            unavailable.update(dict.fromkeys(names, reason or "unavailable: not computed in every seed range"))
            continue
        numbers = np.asarray(per_range, dtype=np.float64)
        values.update(zip(names, (float(numbers.mean()), float(numbers.std(ddof=1)), float(numbers.min()))))
    first = records[0]
    protocol = {**first["protocol"], "seed_ranges": {
        "count": len(ranges), "images": ranges[0].count, "first_indices": [item.first_index for item in ranges],
        **RULES}}
    extra = {"seed_ranges": [{"folder": str(item.samples.parent), "first_index": item.first_index,
                              "result": str(item.samples.parent / RANGE_RESULT), "values": record["values"],
                              "unavailable": record["unavailable"],
                              "fid_bootstrap": (record.get("extra") or {}).get("fid_bootstrap")}
                             for item, record in zip(ranges, records)],
             "reference_path": (first.get("extra") or {}).get("reference_path"),
             "seconds": round(sum((record.get("extra") or {}).get("seconds", 0) for record in records), 3)}
    sampler = {key: value for key, value in first["sampler"].items() if key != "first_index"}
    samples = {"path": str(folder), "count": ranges[0].count, "ranges": [record["samples"] for record in records]}
    return make_result("imagenet", VERSION, values, protocol, backend=first["evaluator"]["backend"],
                       unavailable=unavailable, samples=samples, model=first["model"], sampler=sampler,
                       run=first["run"], extra=extra)


def evaluate_seed_ranges(folder: str | os.PathLike, reference: Any, out: str | os.PathLike, **options: Any) -> dict:
    """Score every seed range of `folder` against `reference` (each range's result beside its samples), write the
    aggregate record to `out` and return it; `options` are `evaluate_imagenet`'s."""
    check_writable(out)                  # before the work, not after it
    ranges = find_seed_ranges(folder)
    records = []
    for item in ranges:
        sampler, _ = sampler_and_model(item.samples)
        records.append(evaluate("imagenet", [item.samples, reference], item.samples.parent / RANGE_RESULT,
                                sampler={**sampler, "first_index": item.first_index}, **options))
    record = aggregate_seed_ranges(ranges, records, folder)
    if current_world()[0] == 0:
        write_json_atomic(out, record)
    return record
