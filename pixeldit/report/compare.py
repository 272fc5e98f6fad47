"""Protocol audit of two numbers: which protocol fields differ, what each difference is known to do, and whether
the two numbers can be put side by side.

A side is a result JSON (`pixeldit.infra.results`) or a published row (`published:<setting>/<method>[@<epochs>]`,
see `published_record`). Every field the harness knows is one row of `PROTOCOL_FIELDS`: where it sits in a
record, what a difference in it is known to do, and the verdict a difference earns. A field recorded on one side
only is *unknown* and earns a caveat; a field neither side records is listed as such and does not count.
The overall verdict is the worst of the fields'.
"""
from __future__ import annotations

import difflib
import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pixeldit.infra.results import read_result
from pixeldit.report.published import PublishedRow, load_published
from pixeldit.report.tables import DPG_METRICS, GENEVAL_METRICS, IMAGENET_METRICS

PUBLISHED_PREFIX = "published:"
# Published DPG-Bench numbers come from the reference script, hence its mode (see tables.DPG_MODES).
_PUBLISHED_DPG_MODE = "reference"


class Verdict(enum.IntEnum):
    """Ordered from best to worst: the overall verdict is the maximum."""

    COMPARABLE = 0
    CAVEAT = 1
    NOT_COMPARABLE = 2

    @property
    def label(self) -> str:
        return {Verdict.COMPARABLE: "comparable", Verdict.CAVEAT: "comparable with caveat",
                Verdict.NOT_COMPARABLE: "not comparable"}[self]


Reader = Callable[[Mapping[str, Any]], Any]


def _at(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path ("protocol.samples.count"), None where any step is missing."""
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def first_of(*paths: str) -> Reader:
    """The value at the first of `paths` that a record holds (evaluators put the same fact in different places)."""
    def read(record: Mapping[str, Any]) -> Any:
        return next((value for value in (_at(record, path) for path in paths) if value is not None), None)
    return read


def seed_range_count(record: Mapping[str, Any]) -> int | None:
    """How many seed ranges a record's values average: protocol.seed_ranges.count, 1 for a result scored on one sample
    set (it records protocol.samples), None where neither is known (a published row)."""
    count = _at(record, "protocol.seed_ranges.count")
    return count if count is not None else (1 if _at(record, "protocol.samples.count") is not None else None)


def first_sample_index(record: Mapping[str, Any]) -> int | list[int] | None:
    """The sample index a record's samples start at (a seed range's sampler.first_index; every range's for a mean over
    seed ranges), 0 where only the seed is recorded: sets sampled before seed ranges, and range 0, start at 0."""
    index = first_of("sampler.first_index", "protocol.seed_ranges.first_indices")(record)
    return index if index is not None else (0 if _at(record, "sampler.seed") is not None else None)


def extra_extractor_weights(record: Mapping[str, Any]) -> dict[str, str | None] | None:
    """{extractor: its weight file's sha256 (None when it was unavailable)} of the feature spaces a result adds to
    ADM's suite (`eval imagenet --features`), None when it adds none."""
    blocks = _at(record, "protocol.extractors")
    if not isinstance(blocks, Mapping) or not blocks:
        return None
    return {name: _at(block, "card.weights_file.sha256") for name, block in sorted(blocks.items())}


def all_of(*paths: str) -> Reader:
    """The values at all of `paths` as one list, None unless every one is recorded."""
    def read(record: Mapping[str, Any]) -> Any:
        values = [_at(record, path) for path in paths]
        return None if any(value is None for value in values) else values
    return read


@dataclass(frozen=True)
class ProtocolField:
    """One protocol fact: how to read it from a record, what a difference in it is known to do, its verdict."""

    name: str
    read: Reader
    if_different: Verdict
    note: str


PROTOCOL_FIELDS: tuple[ProtocolField, ...] = (
    ProtocolField("evaluator", first_of("evaluator.name"), Verdict.NOT_COMPARABLE,
                  "different benchmarks measure different quantities; their numbers share no scale"),
    ProtocolField("backend", first_of("evaluator.backend"), Verdict.NOT_COMPARABLE,
                  "same images, other metric code: ADM's evaluator vs clean-fid gave FID 4.28 vs 2.11 (LlamaGen#34)"),
    ProtocolField("task version", first_of("evaluator.version"), Verdict.CAVEAT,
                  "the evaluator's protocol changed between versions; its task.yaml and git log say how"),
    ProtocolField("extractor", first_of("protocol.extractor.name", "protocol.detector.config", "protocol.vqa.model"),
                  Verdict.NOT_COMPARABLE,
                  "FID is defined on TF-Inception pool3 (Heusel et al. 2017); other features give another scale "
                  "(Kynkäänniemi et al. 2023)"),
    ProtocolField("extractor weights sha256",
                  first_of("protocol.extractor.features_sha256", "protocol.detector.weights_sha256",
                           "protocol.vqa.weights_sha256"), Verdict.NOT_COMPARABLE,
                  "same network, other weights (e.g. torchvision's Inception instead of the TF 2015-12-05 graph) "
                  "shifts FID (pytorch-fid README)"),
    ProtocolField("other feature spaces (extractor: weights sha256)", extra_extractor_weights, Verdict.CAVEAT,
                  "FD_DINOv2, CMMD and the other values of an extractor compare only under the same weights (None: "
                  "unavailable on that side); ADM's Inception values are unaffected"),
    ProtocolField("reference file", first_of("protocol.reference.file"), Verdict.CAVEAT,
                  "a renamed file with the same sha256 is the same set; otherwise the sha256 row decides"),
    ProtocolField("reference sha256", first_of("protocol.reference.sha256"), Verdict.NOT_COMPARABLE,
                  "FID is a distance to the reference: another set, split or preprocessing is another target "
                  "(ADM's VIRTUAL_imagenet256_labeled.npz vs statistics built elsewhere)"),
    ProtocolField("FID reference statistics",
                  first_of("protocol.fid.reference_statistics", "protocol.calculate_metrics.reference_statistics",
                           "protocol.reference_statistics"), Verdict.NOT_COMPARABLE,
                  "ADM's batch stores mu/sigma of the whole training set beside a 10k-image batch; FID against "
                  "the 10k images differs (mar#8, rcg#35)"),
    ProtocolField("reference images (precision/recall, KID)", first_of("protocol.reference.count"), Verdict.CAVEAT,
                  "k-NN precision/recall (Kynkäänniemi et al. 2019) and KID depend on the reference size; ADM "
                  "uses its 10k batch; FID from stored statistics does not"),
    ProtocolField("sample count", first_of("protocol.samples.count", "protocol.images"), Verdict.NOT_COMPARABLE,
                  "FID is biased upwards at small N (Chong & Forsyth 2020); papers report 50,000 samples"),
    ProtocolField("resolution", first_of("protocol.samples.resolution"), Verdict.NOT_COMPARABLE,
                  "FID at 256² and at 512² are different benchmarks with different reference batches (ADM)"),
    ProtocolField("resize", first_of("protocol.resize"), Verdict.NOT_COMPARABLE,
                  "how images reach 299×299 (TF bilinear vs PIL bicubic, antialiasing) moves FID by points "
                  "(clean-fid, Parmar et al. 2022)"),
    ProtocolField("label sampling", first_of("sampler.labels"), Verdict.CAVEAT,
                  "class-balanced labels (50 per class) vs random labels shift FID (CompVis/latent-diffusion#262)"),
    ProtocolField("quantisation", first_of("sampler.quantization"), Verdict.CAVEAT,
                  "round (DiT) vs floor (ADM's image_sample.py) to uint8 shifts FID slightly"),
    ProtocolField("sampler method", first_of("sampler.method"), Verdict.CAVEAT,
                  "the ODE/SDE solver changes sample quality at a given step count (EDM, Karras et al. 2022)"),
    ProtocolField("sampler steps", first_of("sampler.steps"), Verdict.CAVEAT,
                  "FID falls with the number of function evaluations until it saturates (EDM, Karras et al. 2022)"),
    ProtocolField("CFG scale", first_of("sampler.cfg_scale"), Verdict.CAVEAT,
                  "guidance dominates FID: DiT-XL/2 scores 9.62 unguided and 2.27 at scale 1.5 (Peebles & Xie 2023; "
                  "DiT#8: 4.0 vs 1.5)"),
    ProtocolField("CFG interval", all_of("sampler.cfg_min", "sampler.cfg_max"), Verdict.CAVEAT,
                  "guidance on part of the trajectory only improves FID (Kynkäänniemi et al. 2024)"),
    ProtocolField("time shift", first_of("sampler.shift"), Verdict.CAVEAT,
                  "the timestep shift warps the schedule (Esser et al. 2024); PixelDiT uses 1.0 at 256², 2.0 at 512²"),
    ProtocolField("seed", first_of("sampler.seed"), Verdict.COMPARABLE,
                  "another seed is another draw of the same distribution; EDM2 (Karras et al. 2024) reports the "
                  "minimum over seeds, so the spread matters for small gaps"),
    ProtocolField("first sample index", first_sample_index, Verdict.COMPARABLE,
                  "another seed range (`sample --seed-ranges`): other noise of the same seed, like another seed"),
    ProtocolField("seed ranges", seed_range_count, Verdict.CAVEAT,
                  "a mean over K seed ranges has one range's expected value with 1/sqrt(K) of its spread; EDM2 "
                  "reports the minimum over ranges (<metric>_min), lower than the mean"),
    ProtocolField("EMA weights", first_of("model.weights"), Verdict.CAVEAT,
                  "EMA and raw weights of one run differ markedly in FID; DiT and EDM2 sample from EMA weights"),
    ProtocolField("snapshot (kimg)", first_of("model.kimg"), Verdict.CAVEAT,
                  "another training snapshot is another model; fine when training progress is what is compared"),
    ProtocolField("precision", first_of("sampler.precision"), Verdict.CAVEAT,
                  "bf16 autocast vs fp32 in the model forward changes the samples slightly"),
    ProtocolField("Fréchet route", first_of("protocol.fid.route"), Verdict.COMPARABLE,
                  "sqrtm, eigh and gram agree within 1e-6 relative on the embedded results "
                  "(benchmarks/frechet_routes.py)"),
    ProtocolField("IS split rule", first_of("protocol.is.split_rule"), Verdict.CAVEAT,
                  "the IS alone: ADM's in-order splits of 5,000 vs 10 splits of count // 10 below 50,000 samples "
                  "(task version 2) give different IS; identical from 50,000 on; the other metrics are unchanged"),
)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a label for the reader and a record in the result JSON's layout."""

    label: str
    record: Mapping[str, Any]
    stated: str | None = None      # what a published row says in words (its sampler, NFE, source)


class CompareInputError(ValueError):
    """A side cannot be read: a missing or foreign file, or an unknown published row; the message names the fix."""


def _epochs_text(epochs: float | None) -> str:
    return "" if epochs is None else f"@{epochs:g}"


def published_name(row: PublishedRow) -> str:
    """`published:<setting>/<method>[@<epochs>]`, the name `compare` takes for a published row."""
    return f"{PUBLISHED_PREFIX}{row.setting}/{row.method}{_epochs_text(row.epochs)}"


def _published_values(row: PublishedRow) -> dict[str, float]:
    """The row's numbers under the names result JSONs use (GenEval 'overall', DPG 'dpg_score_reference', ...)."""
    names = {column.published_key: column.key.format(mode=_PUBLISHED_DPG_MODE)
             for column in IMAGENET_METRICS + GENEVAL_METRICS + DPG_METRICS if column.published_key}
    return {names[key]: value for key, value in row.values.items()}


def find_published(name: str, rows: list[PublishedRow]) -> PublishedRow:
    """The row `name` (`published:<setting>/<method>[@<epochs>]`) names; the epochs may be left out when only one
    row has that setting and method."""
    wanted = name.removeprefix(PUBLISHED_PREFIX)
    by_name = {published_name(row).removeprefix(PUBLISHED_PREFIX): row for row in rows}
    if wanted in by_name:
        return by_name[wanted]
    without_epochs = [row for row in rows if f"{row.setting}/{row.method}" == wanted]
    if len(without_epochs) == 1:
        return without_epochs[0]
    if without_epochs:
        raise CompareInputError(f"{name} names {len(without_epochs)} published rows; add the epochs: "
                                f"{', '.join(published_name(row) for row in without_epochs)}")
    close = difflib.get_close_matches(wanted.partition("@")[0], sorted({f"{row.setting}/{row.method}" for row in rows}),
                                      n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(PUBLISHED_PREFIX + match for match in close)}? " if close else ""
    raise CompareInputError(f"no published row {name}; {hint}`pixeldit-bench baselines list` shows them "
                            f"(name: published:<setting>/<method>[@<epochs>])")


def published_record(row: PublishedRow) -> dict[str, Any]:
    """A published row in the result JSON's layout: the file's stated card, the row's numbers, its model."""
    model = {"name": row.method, "type": row.type, "epochs": row.epochs}
    return {**row.card, "values": _published_values(row), "model": model}


def open_side(name: str) -> Side:
    """A result JSON path or a `published:` name -> Side; CompareInputError names the problem and the fix."""
    if name.startswith(PUBLISHED_PREFIX):
        row = find_published(name, load_published())
        stated = "; ".join(f"{key}: {value}" for key, value in (("sampler", row.sampler), ("NFE", row.nfe),
                                                                  ("source", row.source)) if value)
        return Side(published_name(row), published_record(row), stated)
    try:
        record = read_result(name)
    except FileNotFoundError:
        raise CompareInputError(f"{name} does not exist; pass a result JSON (results/metrics/**/<evaluator>.json) "
                                f"or a published row (published:<setting>/<method>)") from None
    except IsADirectoryError:
        raise CompareInputError(f"{name} is a folder; pass one result JSON inside it") from None
    except ValueError as error:
        raise CompareInputError(f"{error}; compare takes result JSONs that `pixeldit-bench eval` writes") from None
    if not isinstance(record.get("evaluator"), Mapping) or not isinstance(record.get("protocol"), Mapping):
        raise CompareInputError(f"{name} has no evaluator or protocol section; rerun the evaluation that wrote it")
    return Side(name, record)


@dataclass(frozen=True)
class FieldComparison:
    field: ProtocolField
    a: Any
    b: Any
    verdict: Verdict

    @property
    def unknown(self) -> bool:
        return self.a is None or self.b is None


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    a: float
    b: float

    @property
    def difference(self) -> float:
        return self.b - self.a


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    differences: tuple[FieldComparison, ...]      # every field that differs or is unknown on one side
    not_recorded: tuple[str, ...]                 # fields neither side records
    metrics: tuple[MetricComparison, ...]        # the values both sides report

    @property
    def verdict(self) -> Verdict:
        return max((difference.verdict for difference in self.differences), default=Verdict.COMPARABLE)

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a.label, "b": self.b.label, "verdict": self.verdict.label,
                "stated": {side.label: side.stated for side in (self.a, self.b) if side.stated},
                "differences": [{"field": d.field.name, "a": d.a, "b": d.b, "unknown": d.unknown,
                                 "verdict": d.verdict.label, "note": d.field.note} for d in self.differences],
                "not_recorded": list(self.not_recorded),
                "metrics": [{"metric": m.metric, "a": m.a, "b": m.b, "difference": m.difference}
                            for m in self.metrics]}


def _number(value: Any) -> float | None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if is_number else None


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON would store them (a tuple read back is a list; 50000 and 50000.0 are one number)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) or (
        _number(a) is not None and _number(a) == _number(b))


def compare_records(a: Side, b: Side) -> Comparison:
    """Every protocol field that differs or is known on one side only, and the values both sides report."""
    differences, not_recorded = [], []
    for protocol_field in PROTOCOL_FIELDS:
        value_a, value_b = protocol_field.read(a.record), protocol_field.read(b.record)
        if value_a is None and value_b is None:
            not_recorded.append(protocol_field.name)
        elif value_a is None or value_b is None:
            differences.append(FieldComparison(protocol_field, value_a, value_b, Verdict.CAVEAT))
        elif not _same(value_a, value_b):
            differences.append(FieldComparison(protocol_field, value_a, value_b, protocol_field.if_different))
    values_a, values_b = a.record.get("values") or {}, b.record.get("values") or {}
    # A mean over seed ranges records <metric>_std / _min over its ranges; a single run's kid_std is KID's spread over
    # subsets: under different range counts the same name means different things, so those are not set side by side.
    ranges_differ = seed_range_count(a.record) != seed_range_count(b.record)

    def companion(metric: str) -> bool:
        stem, _, suffix = metric.rpartition("_")
        return ranges_differ and suffix in ("std", "min") and stem in values_a

    metrics = tuple(MetricComparison(metric, _number(values_a[metric]), _number(values_b.get(metric)))
                    for metric in values_a
                    if _number(values_a[metric]) is not None and _number(values_b.get(metric)) is not None
                    and not companion(metric))
    return Comparison(a, b, tuple(differences), tuple(not_recorded), metrics)


def compare(a: str, b: str) -> Comparison:
    """`compare_records` of two sides named as `open_side` takes them."""
    return compare_records(open_side(a), open_side(b))
