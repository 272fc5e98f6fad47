"""Paper-style tables built from the results DataFrame (`collect.py`) and the published registry.

- `main_tables`: one per class-conditional setting (ImageNet 256, 512, and any measured dataset):
  published rows first, then the latest snapshot of every measured run; an `Origin` column says which.
- `ablation_tables`: one per run group (`run.group`), every variant at the largest budget all reached.
- `t2i_table`: GenEval per task + overall and DPG-Bench per L1 category + overall.

A measured FID with a bootstrap (`extra.fid_bootstrap`) reads `value ± std`; rows of one table whose 95% bootstrap
intervals overlap share a footnote mark `≈` (`≈2`, ... for further groups) naming the overlapping pairs: their
FID difference lies inside the resampling spread. A mean over seed ranges (`protocol.seed_ranges`) reads
`mean ± std` in every metric it records `<metric>_std` for, with its own footnote (the std over the ranges,
never a bootstrap's).

Measured rows scored under different protocol cards (`pixeldit.infra.results.protocol_key`) are never
mixed silently: a table refuses them unless `allow_mixed`, and then marks each row with its card.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from pixeldit.report.published import Gflops, PublishedRow
from pixeldit.report.render import MISSING, UNAVAILABLE, Cell, Table, file_stem, number_cell, text_cell

log = logging.getLogger(__name__)

IMAGENET_EVALUATOR = "imagenet"   # the evaluator whose results fill the class-conditional tables


class MixedProtocolError(ValueError):
    """Two results in one table were computed under different protocol cards."""


@dataclass(frozen=True)
class MetricColumn:
    key: str                        # value name in a measured result JSON
    label: str
    decimals: int
    published_key: str | None       # value name in the published registry, None if never published


IMAGENET_METRICS = (MetricColumn("fid", "FID", 2, "fid"), MetricColumn("sfid", "sFID", 2, "sfid"),
                    MetricColumn("is", "IS", 1, "is"), MetricColumn("precision", "Prec.", 2, "precision"),
                    MetricColumn("recall", "Rec.", 2, "recall"))
# Metrics in other feature spaces (`eval imagenet --features`, value names <metric>_<extractor>): each its own
# column, never merged with FID's or ADM's precision/recall; a table shows one only when some result in it has the
# value (or says why it has none). Only FD_DINOv2 has published numbers (EDM2's).
EXTRACTOR_METRICS = tuple(
    MetricColumn(f"{metric}_dinov2", f"{label}_DINOv2", decimals, "fd_dinov2" if metric == "fd" else None)
    for metric, label, decimals in (("fd", "FD", 2), ("fd_infinity", "FD∞", 2), ("kid", "KD", 4),
                                    ("precision", "Prec.", 2), ("recall", "Rec.", 2), ("density", "Dens.", 2),
                                    ("coverage", "Cov.", 2))
) + (MetricColumn("cmmd_clip", "CMMD", 3, None),)
GENEVAL_METRICS = tuple(MetricColumn(key, f"GenEval {label}", 2, None) for key, label in (
    ("single_object", "Single"), ("two_object", "Two"), ("counting", "Count"), ("colors", "Colors"),
    ("position", "Position"), ("color_attr", "Attr."))) + (MetricColumn("overall", "GenEval Overall", 2, "geneval"),)
# The DPG evaluator scores in a "reference" (ELLA script) and/or "corrected" mode; keys carry the mode.
DPG_METRICS = tuple(MetricColumn(f"{{mode}}/L1/{key}", f"DPG {key.capitalize()}", 1, None) for key in (
    "entity", "attribute", "relation", "global", "other")) + (MetricColumn("dpg_score_{mode}", "DPG Overall", 1, "dpg"),)
DPG_MODES = ("reference", "corrected")   # reference first: published DPG numbers come from the reference script

DATASET_TITLES = {"imagenet": "ImageNet", "t2i": "text-to-image"}


def setting_title(setting: str) -> str:
    """'imagenet-256' -> 'ImageNet 256×256'; the dataset name every caption carries."""
    dataset, _, resolution = setting.rpartition("-")
    if not dataset or not resolution.isdigit():
        return DATASET_TITLES.get(setting, setting)
    return f"{DATASET_TITLES.get(dataset, dataset)} {resolution}×{resolution}"


def _value(row: pd.Series | None, key: str) -> Any:
    """`row[key]`, with absent, None and NaN/NA all read as None (pandas fills gaps with NaN)."""
    value = None if row is None else row.get(key)
    return None if value is None or (not isinstance(value, (dict, list)) and pd.isna(value)) else value


def _compact(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _count_cell(value: Any) -> Cell:
    """Epochs, kimg: whole numbers stay whole in the CSV."""
    return Cell(MISSING) if value is None or pd.isna(value) else Cell(_compact(float(value)), value)


def _measured_params_m(row: pd.Series) -> float | None:
    params = _value(row, "params")
    return None if params is None else params / 1e6


def _params_cell(millions: float | None, suffix: str | None = None) -> Cell:
    """675 -> '675M', 1300 -> '1.3B', plus a published qualifier such as '+VAE' or '2–2.5B'."""
    number = "" if millions is None else (
        f"{millions / 1000:.3g}B" if millions >= 1000 else f"{millions:.3g}M")
    return text_cell(number + (suffix or ""))


def _gflops_cell(table: Table, gflops: Gflops | None) -> Cell:
    """GFLOPs in PixelDiT's 2-FLOPs-per-MAC convention; converted or unknown-convention values are marked."""
    if gflops is None:
        return Cell(MISSING)
    converted = gflops.as_2flops_per_mac()
    if converted is None:
        mark = table.note("FLOP-counting convention not stated by the source or run; shown as given")
        return Cell(_compact(gflops.value), gflops.value, (mark,))
    marks = (table.note("counted in MACs; doubled to 2 FLOPs per MAC"),) if gflops.convention == "mac" else ()
    return Cell(_compact(converted), converted, marks)


def _measured_gflops(row: pd.Series) -> Gflops | None:
    value = _value(row, "gflops")
    return None if value is None else Gflops(float(value), _value(row, "gflops_convention") or "unknown")


def _measured_metric(table: Table, row: pd.Series | None, metric: MetricColumn) -> Cell:
    """A measured value; 'n/a' plus the evaluator's reason when it could not be computed (never 0)."""
    if row is None:
        return Cell(MISSING)
    reason = (_value(row, "unavailable") or {}).get(metric.key)
    if reason:
        reason = str(reason).removeprefix("unavailable:").strip()   # evaluators phrase it "unavailable: why"
        return Cell(UNAVAILABLE, UNAVAILABLE, (table.note(f"n/a = not computed: {reason}"),))
    value = _value(row, metric.key)
    cell = number_cell(None if value is None else float(value), metric.decimals)
    ranges, spread = _value(row, "seed_ranges"), _value(row, f"{metric.key}_std")
    if ranges is not None and spread is not None and cell.value is not None:
        mark = table.note(f"mean ± std over {ranges['count']} seed ranges of {ranges['images']:,} samples each (std "
                          f"across the ranges, ddof 1; not a bootstrap); the minimum over the ranges (EDM2's number) "
                          f"is each metric's _min value in the result")
        return Cell(f"{cell.text} ± {float(spread):.{metric.decimals}f}", cell.value, cell.marks + (mark,))
    boot = _fid_bootstrap(row) if metric.key == "fid" else None
    if boot is None or cell.value is None:
        return cell
    mark = table.note(f"FID ± std over {boot.get('resamples', '?')} bootstrap resamples of the samples (seed "
                      f"{boot.get('seed', '?')}; reference statistics fixed); 95% interval = its 2.5/97.5 percentiles")
    return Cell(f"{cell.text} ± {float(boot['std']):.{metric.decimals}f}", cell.value, cell.marks + (mark,))


def _fid_bootstrap(row: pd.Series | None) -> dict | None:
    boot = _value(row, "fid_bootstrap")
    return boot if isinstance(boot, dict) else None


OVERLAP_MARK = "≈"


def mark_overlapping_fid(table: Table, measured: Sequence[tuple[int, str, pd.Series]]) -> None:
    """Mark the FID cells of rows whose 95% bootstrap intervals overlap (measured: table row index, label, row).

    Intervals are grouped into chains of overlaps; each chain of two or more rows gets one note listing its
    overlapping pairs."""
    if "FID" not in table.columns:
        return
    column = table.columns.index("FID")
    intervals = []
    for index, label, row in measured:
        boot = _fid_bootstrap(row)
        if boot is not None and table.rows[index][column].value is not None:
            intervals.append((float(boot["p2.5"]), float(boot["p97.5"]), index, label))
    intervals.sort()
    groups: list[list[tuple[float, float, int, str]]] = []
    reach = None
    for interval in intervals:
        if groups and interval[0] <= reach:
            groups[-1].append(interval)
            reach = max(reach, interval[1])
        else:
            groups.append([interval])
            reach = interval[1]
    number = 0
    for group in (group for group in groups if len(group) > 1):
        number += 1
        pairs = [f"{a[3]} and {b[3]}" for a, b in combinations(sorted(group, key=lambda item: item[2]), 2)
                 if a[0] <= b[1] and b[0] <= a[1]]
        mark = table.note(f"FID 95% bootstrap intervals overlap ({'; '.join(pairs)}): the FID difference lies "
                          "inside the intervals", mark=OVERLAP_MARK if number == 1 else f"{OVERLAP_MARK}{number}")
        for _, _, index, _ in group:
            cell = table.rows[index][column]
            table.rows[index][column] = Cell(cell.text, cell.value, cell.marks + (mark,))


def _published_metric(row: PublishedRow, metric: MetricColumn) -> Cell:
    value = row.values.get(metric.published_key) if metric.published_key else None
    return number_cell(value, metric.decimals)


def _published_label(table: Table, row: PublishedRow) -> Cell:
    marks = tuple(table.note(text) for text in (row.confidence, row.note) if text)
    return text_cell(row.method, marks)


def _measured_label(row: pd.Series, protocol_marks: Iterable[str]) -> Cell:
    """'<variant> (<run>, <kimg> kimg, <sampler>)', marked with the row's protocol card when mixed."""
    name = _value(row, "variant") or row["run"]
    details = [row["run"]] if name != row["run"] else []
    if _value(row, "kimg") is not None:
        details.append(f"{row['kimg']} kimg")
    details.append(row["sampler"])
    return text_cell(f"{name} ({', '.join(details)})", tuple(protocol_marks))


# ------------------------------------------------------------------------------ protocol checking

def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe_card_difference(card_a: Mapping[str, Any], card_b: Mapping[str, Any], limit: int = 5) -> str:
    """'protocol.reference.sha256: 'ab…' vs 'cd…'; ...' for the fields in which two protocol cards differ."""
    flat_a, flat_b = _flatten(card_a), _flatten(card_b)
    differing = [key for key in sorted(set(flat_a) | set(flat_b)) if flat_a.get(key) != flat_b.get(key)]
    shown = [f"{key}: {str(flat_a.get(key, '<absent>'))[:40]!r} vs {str(flat_b.get(key, '<absent>'))[:40]!r}"
             for key in differing[:limit]]
    more = f"; and {len(differing) - limit} more" if len(differing) > limit else ""
    return "; ".join(shown) + more


def _describe_result(row: pd.Series) -> str:
    return f"run '{row['run']}' ({row['path']})"


def protocol_marks(table: Table, rows: pd.DataFrame, allow_mixed: bool) -> dict[str, str]:
    """Footnote mark per protocol key of `rows`; {} when they share one card. Refuses a mix unless allowed."""
    keys = list(dict.fromkeys(rows["protocol_key"]))
    if len(keys) <= 1:
        return {}
    firsts = [rows[rows["protocol_key"] == key].iloc[0] for key in keys]
    if not allow_mixed:
        raise MixedProtocolError(
            f"table '{table.name}': {_describe_result(firsts[0])} and {_describe_result(firsts[1])} were scored "
            f"under different protocol cards ({keys[0]} vs {keys[1]}); they differ in "
            f"{describe_card_difference(firsts[0]['card'], firsts[1]['card'])}. Re-evaluate them under one "
            "protocol, or pass --allow-mixed (allow_mixed=True) to show them side by side with markers.")
    marks = {}
    for number, (key, first) in enumerate(zip(keys, firsts), start=1):
        text = f"{first['evaluator']} protocol card {key}"
        if number > 1:
            text += f", differs from card {keys[0]} in: {describe_card_difference(firsts[0]['card'], first['card'])}"
        marks[key] = table.note(text, mark=f"{first['evaluator']}-p{number}")
    return marks


# -------------------------------------------------------------------------------- row selection

def latest_snapshots(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows at each run's largest kimg (rows without a kimg are kept)."""
    if rows.empty:
        return rows
    latest = rows.groupby("run")["kimg"].transform("max")
    return rows[rows["kimg"].isna() | (rows["kimg"] == latest).fillna(False)]


def _common_budget(rows: pd.DataFrame) -> int | None:
    """The largest kimg every run of `rows` has a result at, or None."""
    budgets = [set(kimgs.dropna()) for _, kimgs in rows.groupby("run")["kimg"]]
    common = set.intersection(*budgets) if budgets else set()
    return int(max(common)) if common else None


# ------------------------------------------------------------------------------------ the tables

def _contents(measured: pd.DataFrame, published: Sequence[PublishedRow]) -> str:
    """Caption phrase saying whether the table holds measured rows, published rows or both."""
    parts = [part for part, present in (("measured runs (latest snapshot of each run)", not measured.empty),
                                        ("published numbers", bool(published))) if present]
    return " beside ".join(parts)


def imagenet_columns(measured: pd.DataFrame, published: Sequence[PublishedRow] = ()) -> tuple[MetricColumn, ...]:
    """ADM's metric columns, then each extractor column that some row of `measured` has a value or a reason for,
    or some published row a value."""
    def present(metric: MetricColumn) -> bool:
        values = metric.key in measured.columns and measured[metric.key].notna().any()
        reasons = "unavailable" in measured.columns and any(
            isinstance(reasons, dict) and metric.key in reasons for reasons in measured["unavailable"])
        return bool(values or reasons or any(metric.published_key in row.values for row in published))
    return IMAGENET_METRICS + tuple(metric for metric in EXTRACTOR_METRICS if present(metric))


def main_table(setting: str, measured: pd.DataFrame, published: Sequence[PublishedRow], allow_mixed: bool) -> Table:
    columns = imagenet_columns(measured, published)
    metric_labels = [metric.label for metric in columns]
    table = Table(name=f"main-{setting}",
                  caption=f"Class-conditional generation on {setting_title(setting)}: "
                          f"{_contents(measured, published)}; GFLOPs per forward pass, 2 FLOPs per MAC",
                  columns=["Model", "Type", "Origin", "Params", "GFLOPs", "Epochs", "NFE", *metric_labels, "Source"])
    marks = protocol_marks(table, measured, allow_mixed)
    for row in published:
        table.rows.append([_published_label(table, row), text_cell(row.type), text_cell("published"),
                           _params_cell(row.params_m, row.params_note), _gflops_cell(table, row.gflops),
                           _count_cell(row.epochs), text_cell(row.nfe),
                           *(_published_metric(row, metric) for metric in columns), table.cite(row.source)])
    overlapping = []
    for _, row in measured.iterrows():
        overlapping.append((len(table.rows), _measured_label(row, []).text, row))
        table.rows.append([_measured_label(row, [marks[row["protocol_key"]]] if marks else []),
                           text_cell(_value(row, "model_type")), text_cell("measured"),
                           _params_cell(_measured_params_m(row)), _gflops_cell(table, _measured_gflops(row)),
                           _count_cell(_value(row, "epochs")), text_cell(_value(row, "nfe")),
                           *(_measured_metric(table, row, metric) for metric in columns),
                           table.cite(row["path"])])
    mark_overlapping_fid(table, overlapping)
    return table


# An autoencoder's reconstruction FID (rFID, workflow/rules/latent.smk labels it group=autoencoder) is scored on
# all held-out images, not on model samples: it gets its own group table, never a row among the models.
RECONSTRUCTION_GROUP = "autoencoder"


def main_tables(frame: pd.DataFrame, published: Sequence[PublishedRow], allow_mixed: bool = False) -> list[Table]:
    """One main table per class-conditional setting, published settings first."""
    published = [row for row in published
                 if any(m.published_key in row.values for m in IMAGENET_METRICS + EXTRACTOR_METRICS)]
    generators = frame[(frame["evaluator"] == IMAGENET_EVALUATOR) & (frame["group"] != RECONSTRUCTION_GROUP)]
    measured = latest_snapshots(generators)
    for path in measured.loc[measured["setting"] == "unknown", "path"]:
        log.warning("%s names no dataset (run.dataset, protocol.dataset or a reference file named "
                    "<dataset>-<res>-…): it goes to the table 'main-unknown'", path)
    settings = dict.fromkeys([row.setting for row in published] + list(measured["setting"]))
    return [main_table(setting, measured[measured["setting"] == setting],
                       [row for row in published if row.setting == setting], allow_mixed) for setting in settings]


def ablation_table(group: str, members: pd.DataFrame, allow_mixed: bool) -> Table:
    budget = _common_budget(members)
    rows = members[(members["kimg"] == budget).fillna(False)] if budget is not None else latest_snapshots(members)
    titles = ", ".join(setting_title(setting) for setting in dict.fromkeys(rows["setting"]))
    when = (f"every variant at {budget} kimg" if budget is not None
            else "each run's latest snapshot (the runs share no common budget)")
    columns = imagenet_columns(rows)
    table = Table(name=f"ablation-{file_stem(group)}", caption=f"Ablation '{group}' on {titles}: {when}",
                  columns=["Variant", "Run", "kimg", "Sampler", "Params", "GFLOPs",
                           *(metric.label for metric in columns), "Source"])
    marks = protocol_marks(table, rows, allow_mixed)
    overlapping = []
    for _, row in rows.iterrows():
        overlapping.append((len(table.rows), _measured_label(row, []).text, row))
        label = text_cell(_value(row, "variant") or row["run"], (marks[row["protocol_key"]],) if marks else ())
        table.rows.append([label, text_cell(row["run"]), _count_cell(_value(row, "kimg")), text_cell(row["sampler"]),
                           _params_cell(_measured_params_m(row)), _gflops_cell(table, _measured_gflops(row)),
                           *(_measured_metric(table, row, metric) for metric in columns),
                           table.cite(row["path"])])
    mark_overlapping_fid(table, overlapping)
    return table


def ablation_tables(frame: pd.DataFrame, allow_mixed: bool = False) -> list[Table]:
    """One table per run group found in the ImageNet-protocol results (`run.group`)."""
    grouped = frame[(frame["evaluator"] == IMAGENET_EVALUATOR) & frame["group"].notna()]
    return [ablation_table(group, members, allow_mixed) for group, members in grouped.groupby("group", sort=False)]


def _dpg_cells(table: Table, row: pd.Series | None) -> list[Cell]:
    """DPG columns in the first mode the result holds (reference preferred); a corrected-mode row is marked."""
    if row is None:
        return [Cell(MISSING) for _ in DPG_METRICS]
    overall, unavailable = DPG_METRICS[-1].key, _value(row, "unavailable") or {}
    mode = next((mode for mode in DPG_MODES if _value(row, overall.format(mode=mode)) is not None
                 or overall.format(mode=mode) in unavailable), DPG_MODES[0])
    cells = [_measured_metric(table, row, replace(metric, key=metric.key.format(mode=mode))) for metric in DPG_METRICS]
    if mode != "reference":
        mark = table.note(f"DPG-Bench in '{mode}' mode (reference-script quirks fixed); published rows use the "
                          "reference script")
        cells[-1] = Cell(cells[-1].text, cells[-1].value, cells[-1].marks + (mark,))
    return cells


def t2i_table(frame: pd.DataFrame, published: Sequence[PublishedRow], allow_mixed: bool = False) -> Table | None:
    """GenEval + DPG-Bench, measured (latest snapshot per run) beside published; None if there is neither."""
    published = [row for row in published if "geneval" in row.values or "dpg" in row.values]
    measured = latest_snapshots(frame[frame["evaluator"].isin(["geneval", "dpg"])])
    if measured.empty and not published:
        return None
    metrics = GENEVAL_METRICS + DPG_METRICS
    table = Table(name="t2i",
                  caption="Text-to-image on GenEval (553 prompts × 4 images; overall = mean of the 6 task "
                          f"accuracies) and DPG-Bench (1,065 prompts; L1 categories): {_contents(measured, published)}",
                  columns=["Model", "Type", "Origin", "Res.", "Params", *(metric.label for metric in metrics),
                           "Source"])
    marks: dict[str, str] = {}
    for evaluator in ("geneval", "dpg"):
        marks.update(protocol_marks(table, measured[measured["evaluator"] == evaluator], allow_mixed))
    for row in published:
        table.rows.append([_published_label(table, row), text_cell(row.type), text_cell("published"),
                           text_cell(row.setting.rpartition("-")[2]), _params_cell(row.params_m, row.params_note),
                           *(_published_metric(row, metric) for metric in metrics), table.cite(row.source)])
    for _, results in measured.groupby(["run", "kimg", "sampler"], sort=False, dropna=False):
        by_evaluator = {row["evaluator"]: row for _, row in results.iterrows()}
        first = results.iloc[0]
        row_marks = [marks[row["protocol_key"]] for row in by_evaluator.values() if row["protocol_key"] in marks]
        cells = [_measured_label(first, row_marks), text_cell(_value(first, "model_type")), text_cell("measured"),
                 text_cell(_value(first, "resolution")), _params_cell(_measured_params_m(first))]
        cells += [_measured_metric(table, by_evaluator.get("geneval"), metric) for metric in GENEVAL_METRICS]
        cells += _dpg_cells(table, by_evaluator.get("dpg"))
        cells.append(table.cite(" + ".join(row["path"] for row in by_evaluator.values())))
        table.rows.append(cells)
    return table
