"""`pixeldit-bench compare A B --explain`: the measured effect of a protocol difference, where the harness can
measure it by rescoring side A's own samples (and reference) with side B's setting.

Every differing field of `pixeldit.report.compare` either maps to an evaluator option set to B's value here (the
backend, the Fréchet route, the IS split rule, the extractor weights, B's reference file, a smaller sample count)
or gets a one-line reason why it cannot be measured (a sampler setting needs new samples). A's samples are first
rescored with A's own settings, and each effect is the difference to that rescoring: the field's effect alone,
not drift of code or machine since A was scored (the rescoring is shown beside A's recorded values). All scoring
goes through the ImageNet evaluator (`evaluate_imagenet`) and its feature cache, so settings that do not change the
features (route, IS splits, sample count) cost no feature extraction once A's features are cached.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.imagenet import METRICS, VERSION, evaluate_imagenet
from evaluators.imagenet.sample_count import fid_at_sample_count
from pixeldit.infra.devices import resolve_device
from pixeldit.report.compare import Comparison, FieldComparison, first_of

IMAGENET = "imagenet"
# The evaluator's `weights` option that reproduces each Inception file a protocol card names.
WEIGHTS_OPTION = {"inception": "inception", "inception-offline": "offline"}
# Errors the evaluator raises for inputs it cannot score (ImageNetEvalError is a ValueError, a missing weight
# file a FileNotFoundError): they become the reason a field was not measured.
RESCORING_ERRORS = (ValueError, OSError)
NEEDS_NEW_SAMPLES = "needs new samples: `pixeldit-bench sample` with B's setting, then `eval imagenet`"


@dataclass(frozen=True)
class Effect:
    """A field's difference measured on A's samples (values under A's and under B's setting), or why not."""

    setting: str | None = None                                       # what was set to B's value, in words
    baseline: Mapping[str, float] = field(default_factory=dict)      # A's samples, A's settings
    measured: Mapping[str, float] = field(default_factory=dict)      # A's samples, B's setting
    reason: str | None = None                                        # why nothing was measured

    @property
    def differences(self) -> dict[str, float]:
        return {metric: value - self.baseline[metric] for metric, value in self.measured.items()
                if metric in self.baseline}

    def describe(self) -> str:
        """One line for the table: 'fid 48.0012 → 52.31 (+4.31); ...' or 'not measured: <reason>'."""
        if self.reason is not None:
            return f"not measured: {self.reason}"
        return "; ".join(f"{metric} {self.baseline[metric]:.6g} → {value:.6g} ({self.differences[metric]:+.3g})"
                         for metric, value in self.measured.items() if metric in self.baseline)

    def as_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "a_settings": dict(self.baseline), "b_setting": dict(self.measured),
                "difference": self.differences, "reason": self.reason}


@dataclass(frozen=True)
class Explanation:
    """Every differing field's effect, and A's recorded values beside A rescored with its own settings."""

    effects: Mapping[str, Effect]                 # by field name, in the comparison's order
    recorded: Mapping[str, float]                 # A's values as its result file records them
    rescored: Mapping[str, float] | None          # A's samples rescored with A's settings (None: nothing rescored)


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def _readable(path: Any) -> Path | None:
    return Path(path) if isinstance(path, str) and os.access(path, os.R_OK) else None


def _frechet_metric(metric: str) -> bool:
    """The metrics a Fréchet route touches: FID, sFID and every extra extractor's FD (fd_<name>)."""
    return metric in ("fid", "sfid") or metric.startswith("fd_")


class Rescoring:
    """Side A's samples scored by the ImageNet evaluator with A's settings, some changed; each setting scored once."""

    def __init__(self, record: Mapping[str, Any], device: str | None = None, cache_dir: str | None = None):
        self.record, self.device, self.cache_dir = record, device, cache_dir
        self.samples = _readable((record.get("samples") or {}).get("path"))
        self.reference = _readable((record.get("extra") or {}).get("reference_path"))
        self.unusable = self._why_unusable()
        protocol, values = record.get("protocol") or {}, record.get("values") or {}
        extractors = list(protocol.get("extractors") or {})
        self.settings = {
            "backend": first_of("evaluator.backend")(record) or "adm",
            "frechet": first_of("protocol.fid.route")(record),
            "is_split_rule": first_of("protocol.is.split_rule")(record),
            "weights": WEIGHTS_OPTION.get(first_of("protocol.extractor.weights")(record), "auto"),
            "metrics": [metric for metric in METRICS if metric in values] or None,
            "features": ",".join(["inception", *extractors]) if extractors else None}
        self.settings = {name: value for name, value in self.settings.items() if value is not None}
        self._scored: dict[str, dict[str, float] | str] = {}

    @staticmethod
    def _key(changes: Mapping[str, Any]) -> str:
        return json.dumps(changes, sort_keys=True, default=str)

    @property
    def own_settings(self) -> dict[str, float] | None:
        """A's values rescored with A's own settings, if any measurement needed them (never scores anything)."""
        scored = self._scored.get(self._key({}))
        return scored if isinstance(scored, dict) else None

    def _why_unusable(self) -> str | None:
        """Why A's samples cannot be rescored at all (None: they can)."""
        evaluator = first_of("evaluator.name")(self.record)
        if evaluator != IMAGENET:
            return f"--explain rescores ImageNet-suite results; A is a {evaluator or 'published'} result"
        if first_of("protocol.seed_ranges")(self.record) is not None:
            return ("A is a mean over seed ranges; explain one range's result (range-<r>/samples-imagenet.json) "
                    "instead")
        for name, path, where in (("samples", self.samples, "samples.path"),
                                  ("reference", self.reference, "extra.reference_path")):
            if path is None:
                recorded = first_of(where)(self.record)
                return f"A's {name} file ({where}: {recorded}) is not readable here"
        return None

    def values(self, **changes: Any) -> dict[str, float] | str:
        """A's samples' values with `changes` to A's settings (a `reference` path included), or why they could not
        be scored."""
        if self.unusable:
            return self.unusable
        key = self._key(changes)
        if key not in self._scored:
            options = {**self.settings, **changes}
            reference = options.pop("reference", self.reference)
            try:
                record = evaluate_imagenet(self.samples, reference, bootstrap=0, device=self.device,
                                           cache_dir=self.cache_dir, **options)
                self._scored[key] = _numbers(record["values"])
            except RESCORING_ERRORS as error:
                self._scored[key] = f"rescoring failed: {error}"
        return self._scored[key]

    def effect(self, setting: str, selects: Callable[[str], bool] | None = None, **changes: Any) -> Effect:
        """The effect of `changes` on the metrics `selects` picks (all by default)."""
        baseline, measured = self.values(), self.values(**changes)
        for outcome in (baseline, measured):
            if isinstance(outcome, str):
                return Effect(setting, reason=outcome)
        shown = {metric: value for metric, value in measured.items()
                 if metric in baseline and (selects is None or selects(metric))}
        if not shown:
            return Effect(setting, reason=f"none of A's metrics ({', '.join(baseline) or 'none computed'}) changes "
                                          f"with {setting}")
        return Effect(setting, baseline, shown)


# ------------------------------------------------------------------------------------------- the measurements

Measurer = Callable[[Rescoring, FieldComparison, Mapping[str, Any]], Effect]


def _option(option: str, selects: Callable[[str], bool] | None = None) -> Measurer:
    """Rescore with the evaluator option `option` set to B's value of the field."""
    def measure(rescoring: Rescoring, difference: FieldComparison, b: Mapping[str, Any]) -> Effect:
        return rescoring.effect(f"{option}={difference.b}", selects, **{option: difference.b})
    return measure


def _resize(rescoring: Rescoring, difference: FieldComparison, b: Mapping[str, Any]) -> Effect:
    """The resize to 299 belongs to the backend: measurable only as the backend's difference."""
    backend_a, backend_b = rescoring.settings["backend"], first_of("evaluator.backend")(b)
    if backend_b is None or backend_b == backend_a:
        return Effect(reason=f"the resize is the backend's ({backend_a}); no option changes it alone")
    return rescoring.effect(f"backend={backend_b} (its resize)", backend=backend_b)


def _weights(rescoring: Rescoring, difference: FieldComparison, b: Mapping[str, Any]) -> Effect:
    name = first_of("protocol.extractor.weights")(b)
    if name not in WEIGHTS_OPTION:
        return Effect(reason=f"B's extractor weights ({name or 'unnamed'}) are not one of this harness's Inception "
                             f"files ({', '.join(WEIGHTS_OPTION)})")
    if name == first_of("protocol.extractor.weights")(rescoring.record):
        return Effect(reason=f"B's {name} file differs from A's; this machine holds one file of that name")
    return rescoring.effect(f"weights={WEIGHTS_OPTION[name]}", weights=WEIGHTS_OPTION[name])


def _reference(rescoring: Rescoring, difference: FieldComparison, b: Mapping[str, Any]) -> Effect:
    recorded = first_of("extra.reference_path")(b)
    path = _readable(recorded)
    if path is None:
        return Effect(reason=f"B's reference file ({recorded or 'not recorded'}) is not readable here")
    return rescoring.effect(f"reference={path}", reference=str(path))


def _task_version(rescoring: Rescoring, difference: FieldComparison, b: Mapping[str, Any]) -> Effect:
    """This checkout's evaluator is one task version: it measures the change only when that is B's version."""
    if difference.b != VERSION:
        return Effect(reason=f"needs the ImageNet evaluator at task version {difference.b}; this checkout runs "
                             f"version {VERSION}")
    rescored = rescoring.values()
    if isinstance(rescored, str):
        return Effect(reason=rescored)
    recorded = _numbers(rescoring.record.get("values") or {})
    return Effect(f"task version {VERSION} (this checkout)", recorded,
                  {metric: value for metric, value in rescored.items() if metric in recorded})


def _sample_count(rescoring: Rescoring, difference: FieldComparison, b: Mapping[str, Any]) -> Effect:
    """FID of the first N of A's samples (the nested subsets of `extra.fid_vs_n`) from the cached features."""
    count_a, count_b = int(difference.a), int(difference.b)
    if count_b >= count_a:
        return Effect(reason=f"B's {count_b:,} samples are more than A's {count_a:,}: measure from B's side "
                             f"(`compare B A --explain`) or sample more")
    if rescoring.settings["backend"] != "adm":
        return Effect(reason=f"FID on subsets is the adm backend's; A's backend is {rescoring.settings['backend']}")
    baseline = rescoring.values()
    if isinstance(baseline, str):
        return Effect(reason=baseline)
    if "fid" not in baseline:
        return Effect(reason="A has no FID")
    seed = first_of("extra.fid_uncertainty.bootstrap_seed", "extra.fid_vs_n.seed")(rescoring.record) or 0
    try:
        fid = fid_at_sample_count(rescoring.samples, rescoring.reference, count_b, seed=seed,
                                  weights=rescoring.settings["weights"], device=rescoring.device,
                                  cache_dir=rescoring.cache_dir)
    except RESCORING_ERRORS as error:
        return Effect(reason=f"rescoring failed: {error}")
    return Effect(f"FID of the first {count_b:,} of A's samples (seed-{seed} permutation, as extra.fid_vs_n)",
                  {"fid": baseline["fid"]}, {"fid": fid})


MEASURERS: dict[str, Measurer] = {
    "backend": _option("backend"),
    "Fréchet route": _option("frechet", _frechet_metric),
    "IS split rule": _option("is_split_rule", lambda metric: metric == "is"),
    "resize": _resize,
    "extractor weights sha256": _weights,
    "reference file": _reference,
    "reference sha256": _reference,
    "FID reference statistics": _reference,
    "reference images (precision/recall, KID)": _reference,
    "task version": _task_version,
    "sample count": _sample_count,
}
# Fields no rescoring of A's samples can measure, and why (one line each).
NOT_MEASURABLE: dict[str, str] = {
    "evaluator": "another benchmark: no rescoring turns one into the other",
    "extractor": "another feature network: FID is defined on TF-Inception pool3 (other networks: `eval imagenet "
                 "--features`, their own metrics)",
    "resolution": "needs samples at B's resolution and a reference at it",
    **dict.fromkeys(("seed", "first sample index"), "another draw of the samples: needs B's samples (B's values are "
                                                    "that draw)"),
    "seed ranges": "needs a sample set per seed range: `pixeldit-bench sample --seed-ranges K`, then "
                   "`eval imagenet DIR --seed-ranges`",
    **dict.fromkeys(("label sampling", "quantisation", "sampler method", "sampler steps", "CFG scale", "CFG interval",
                     "time shift", "EMA weights", "snapshot (kimg)", "precision"), NEEDS_NEW_SAMPLES),
}


def _effect(rescoring: Rescoring, difference: FieldComparison, b: Mapping[str, Any]) -> Effect:
    name = difference.field.name
    if name in NOT_MEASURABLE:
        return Effect(reason=NOT_MEASURABLE[name])
    if difference.unknown:
        return Effect(reason=f"{'A' if difference.a is None else 'B'} does not record it")
    if name not in MEASURERS:
        return Effect(reason="no measurement is defined for this field")
    return MEASURERS[name](rescoring, difference, b)


def explain(comparison: Comparison, *, device: str | None = None, cache_dir: str | None = None) -> Explanation:
    """The effect of every differing field of `comparison`, measured on A's samples where it can be.
    A device this machine lacks is refused here (DeviceError), before anything is scored."""
    resolve_device(device)
    rescoring = Rescoring(comparison.a.record, device, cache_dir)
    effects = {difference.field.name: _effect(rescoring, difference, comparison.b.record)
               for difference in comparison.differences}
    return Explanation(effects, _numbers(comparison.a.record.get("values") or {}), rescoring.own_settings)
