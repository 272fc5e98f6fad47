"""`<out>/index.html`: the whole report as one page that opens from disk, offline, without JavaScript.

Built from the same tables and plots as report.md plus the result JSONs themselves:

    summary            result files, runs, evaluators, machine / commit / date from each result's `env` card,
                       evaluation wall time where results record it (`extra.seconds`)
    tables             main, ablation, latent vs pixel by training compute, text-to-image
    plots              the PNGs under plots/ (SVG linked)
    samples            every samples/<run>/<kimg>/<sampler>/samples-grid.png, copied to grids/ (anchor per run)
    result files       every value of every result; `<metric>_std` values are shown as `value ± std`, an FID
                       with its bootstrap std and 95% interval (`extra.fid_bootstrap`), a mean over seed ranges
                       as `mean ± std (std over K seed ranges, min <metric>_min)`
    reproduce          the report command and every command line a result records

Every number carries its protocol card in a `<details>` (evaluator + protocol of a measured value, the
registry row of a published one). URLs may appear only as text inside such a card: nothing on the page
links to, or loads from, the network; images are relative paths under the report folder.
"""
from __future__ import annotations

import dataclasses
import html
import json
import numbers
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from pixeldit.infra.results import read_result
from pixeldit.report.plots import PlotJob, Skipped
from pixeldit.report.published import PublishedRow
from pixeldit.report.render import MISSING, UNAVAILABLE, Cell, Table, file_stem, number_cell, numeric_columns, text_cell
from pixeldit.report.tables import (
    EXTRACTOR_METRICS,
    GENEVAL_METRICS,
    IMAGENET_EVALUATOR,
    IMAGENET_METRICS,
    RECONSTRUCTION_GROUP,
    setting_title,
)

STYLESHEET = Path(__file__).with_name("report.css")
GRID_NAME = "samples-grid.png"
GRIDS_DIR = "grids"
# Column label -> (value key, decimals), to find a value's `<key>_std` in its result (DPG keys carry a mode).
_METRIC_BY_LABEL = {metric.label: (metric.key, metric.decimals)
                    for metric in IMAGENET_METRICS + EXTRACTOR_METRICS + GENEVAL_METRICS}
_COMMAND_KEYS = ("command", "build_command")


def _escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(*parts: Any) -> str:
    return "-".join(file_stem(part) for part in parts)


# ------------------------------------------------------------------------------------ protocol cards

def measured_card(path: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """What a measured number was computed under: its result file, evaluator and protocol."""
    return {"result": path, "evaluator": record["evaluator"], "protocol": record["protocol"]}


def published_card(row: PublishedRow) -> dict[str, Any]:
    """A published number's card: its registry row, which names the source and the registry version."""
    return json.loads(json.dumps(dataclasses.asdict(row), default=dict))


def _card_details(summary_html: str, cards: Sequence[Mapping[str, Any]]) -> str:
    card_text = json.dumps(cards[0] if len(cards) == 1 else cards, indent=1, sort_keys=True, default=str)
    return (f'<details class="card"><summary>{summary_html}</summary>'
            f'<pre class="card">{_escape(card_text)}</pre></details>')


# ------------------------------------------------------------------------------------------ tables

@dataclasses.dataclass(frozen=True)
class RowOrigin:
    """Where one table row's numbers come from: result files (measured) or a registry row (published)."""

    records: dict[str, Mapping[str, Any]]      # result path -> record; empty for a published row
    published: PublishedRow | None = None

    def cards_for(self, column: str) -> list[dict[str, Any]]:
        """Cards behind a cell of `column`: a T2I row joins GenEval and DPG results, each column is one of them."""
        if self.published is not None:
            return [published_card(self.published)]
        matching = {path: record for path, record in self.records.items()
                    if column.lower().startswith(record["evaluator"]["name"].lower())}
        return [measured_card(path, record) for path, record in (matching or self.records).items()]


def row_origin(table: Table, row: Sequence[Cell], records: Mapping[str, Mapping[str, Any]],
               published: Sequence[PublishedRow]) -> RowOrigin | None:
    """Read a row's origin off its Source cell: result paths joined by ' + ', or a published source."""
    if table.columns[-1] != "Source" or not isinstance(row[-1].value, str):
        return None
    paths = row[-1].value.split(" + ")
    if all(path in records for path in paths):
        return RowOrigin({path: records[path] for path in paths})
    match = _published_row(table, row, published)
    return RowOrigin({}, match) if match is not None else None


def _published_row(table: Table, row: Sequence[Cell], published: Sequence[PublishedRow]) -> PublishedRow | None:
    """The registry row a table row copies: same source and method, and (one method can be listed at several
    budgets or settings) the same epochs and setting where the table shows them."""
    cells = dict(zip(table.columns, row))
    setting = table.name.removeprefix("main-") if table.name.startswith("main-") else None
    for entry in published:
        if entry.source != row[-1].value or entry.method != row[0].text:
            continue
        if "Epochs" in cells and cells["Epochs"].value != entry.epochs:
            continue
        if setting is not None and entry.setting != setting:
            continue
        if "Res." in cells and cells["Res."].value != entry.setting.rpartition("-")[2]:
            continue
        return entry
    return None


def _interval(origin: RowOrigin | None, column: str) -> str:
    """' ± std' when the single result behind a cell records `<key>_std` for it; '' otherwise."""
    if origin is None or column not in _METRIC_BY_LABEL:
        return ""
    key, decimals = _METRIC_BY_LABEL[column]
    cards = origin.cards_for(column)
    if origin.published is not None or len(cards) != 1:
        return ""
    std = (origin.records[cards[0]["result"]].get("values") or {}).get(f"{key}_std")
    return f" ± {std:.{decimals}f}" if isinstance(std, numbers.Real) and not isinstance(std, bool) else ""


def is_number(cell: Cell) -> bool:
    """Cells that show a number (or say why it is missing): each gets a protocol card."""
    if cell.text == UNAVAILABLE or (isinstance(cell.value, numbers.Real) and not isinstance(cell.value, bool)):
        return True
    try:   # numbers kept as text, such as a resolution
        float(cell.text)
    except ValueError:
        return False
    return True


def _cell_html(cell: Cell, column: str, origin: RowOrigin | None, numeric: bool) -> str:
    marks = f'<sup class="marks">{_escape(",".join(cell.marks))}</sup>' if cell.marks else ""
    interval = _interval(origin, column) if is_number(cell) and "±" not in cell.text else ""   # ± from a bootstrap
    text = _escape(cell.text + interval)
    if origin is not None and is_number(cell) and cell.text != MISSING:
        text = _card_details(text, origin.cards_for(column))
    css = ' class="number"' if numeric else ""
    return f"<td{css}>{text}{marks}</td>"


def table_html(table: Table, records: Mapping[str, Mapping[str, Any]], published: Sequence[PublishedRow],
               written: bool = True) -> str:
    """One `<table>` with its caption, footnotes and numbered sources; every number opens its card.

    `written`: the table is also under tables/ (md, tex, csv), so the page links those files."""
    numeric = numeric_columns(table)
    head = "".join(f"<th>{_escape(column)}</th>" for column in table.columns)
    body = []
    for row in table.rows:
        origin = row_origin(table, row, records, published)
        css = ' class="published"' if origin is not None and origin.published is not None else ""
        cells = "".join(_cell_html(cell, column, origin, flag)
                        for cell, column, flag in zip(row, table.columns, numeric))
        body.append(f"<tr{css}>{cells}</tr>")
    parts = [f'<div class="table-wrap" id="table-{_anchor(table.name)}"><table>',
             f"<caption>{_escape(table.caption)}</caption>", f"<thead><tr>{head}</tr></thead>",
             "<tbody>" + "".join(body) + "</tbody></table>"]
    if table.notes:
        parts.append('<ol class="notes">' + "".join(f"<li><sup>{_escape(mark)}</sup> {_escape(text)}</li>"
                                                   for mark, text in table.notes.items()) + "</ol>")
    if table.sources:
        parts.append('<ol class="sources">' + "".join(f"<li>{_escape(source)}</li>" for source in table.sources)
                     + "</ol>")
    if written:
        parts.append("<p>" + " · ".join(f'<a href="tables/{_escape(table.name)}.{extension}">{extension}</a>'
                                        for extension in ("md", "tex", "csv")) + "</p>")
    parts.append("</div>")
    return "\n".join(parts)


def latent_vs_pixel_tables(frame: pd.DataFrame) -> list[Table]:
    """Per setting holding both latent and pixel FID results with training compute: every snapshot, by compute."""
    needed = {"fid", "train_pflops", "model_type"}
    if frame.empty or not needed <= set(frame.columns):
        return []
    rows = frame[(frame["evaluator"] == IMAGENET_EVALUATOR) & (frame["group"] != RECONSTRUCTION_GROUP)
                 & frame["fid"].notna() & frame["train_pflops"].notna()]
    tables = []
    for setting, members in rows.groupby("setting", sort=False):
        if not {"latent", "pixel"} <= set(members["model_type"].dropna()):
            continue
        table = Table(name=f"latent_vs_pixel-{setting}",
                      caption=f"Latent vs pixel on {setting_title(setting)} at matched training compute: every "
                              "evaluated snapshot, sorted by training compute (PFLOPs, 2 FLOPs per MAC)",
                      columns=["Model", "Type", "Run", "kimg", "Sampler", "Train PFLOPs", "FID", "Source"])
        for _, row in members.sort_values(["train_pflops", "run"]).iterrows():
            label = row["variant"] if isinstance(row["variant"], str) else row["run"]
            kimg = None if pd.isna(row["kimg"]) else int(row["kimg"])
            table.rows.append([text_cell(label), text_cell(row["model_type"]), text_cell(row["run"]),
                               Cell(MISSING) if kimg is None else Cell(str(kimg), kimg), text_cell(row["sampler"]),
                               number_cell(float(row["train_pflops"]), 3), number_cell(float(row["fid"]), 2),
                               table.cite(row["path"])])
        tables.append(table)
    return tables


# ------------------------------------------------------------------------------------------ images

@dataclasses.dataclass(frozen=True)
class SampleGrid:
    run: str
    kimg: int
    sampler: str
    page_path: str           # relative to the report folder


def copy_sample_grids(results_dir: Path, out_dir: Path) -> list[SampleGrid]:
    """Copy samples/<run>/<kimg>/<sampler>/samples-grid.png to <out>/grids/, so the page travels with its folder."""
    grids = []
    for source in sorted((results_dir / "samples").glob(f"*/*/*/{GRID_NAME}")):
        sampler_dir = source.parent
        kimg_dir, run_dir = sampler_dir.parent, sampler_dir.parent.parent
        if not kimg_dir.name.isdigit():
            continue
        page_path = f"{GRIDS_DIR}/{file_stem(run_dir.name)}/{kimg_dir.name}-{file_stem(sampler_dir.name)}.png"
        (out_dir / page_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out_dir / page_path)
        grids.append(SampleGrid(run_dir.name, int(kimg_dir.name), sampler_dir.name, page_path))
    return grids


def _plots_html(plots: Sequence[PlotJob], skipped: Sequence[Skipped]) -> str:
    figures = [f'<figure id="plot-{_anchor(job.name)}"><img src="plots/{_escape(job.name)}.png" '
               f'alt="{_escape(job.title)}"><figcaption>{_escape(job.title)} '
               f'(<a href="plots/{_escape(job.name)}.svg">svg</a>)</figcaption></figure>' for job in plots]
    lines = figures or ["<p>No plot could be drawn.</p>"]
    if skipped:
        lines.append("<h3>Skipped plots</h3><ul>" + "".join(
            f"<li><code>{_escape(item.name)}</code>: {_escape(item.reason)}</li>" for item in skipped) + "</ul>")
    return "\n".join(lines)


def _grids_html(grids: Sequence[SampleGrid]) -> str:
    if not grids:
        return f"<p>No <code>samples/&lt;run&gt;/&lt;kimg&gt;/&lt;sampler&gt;/{GRID_NAME}</code> found.</p>"
    runs = list(dict.fromkeys(grid.run for grid in grids))
    lines = ["<p>" + " · ".join(f'<a href="#samples-{_anchor(run)}">{_escape(run)}</a>' for run in runs) + "</p>"]
    for run in runs:
        lines.append(f'<section class="run" id="samples-{_anchor(run)}"><h3>{_escape(run)}</h3>')
        for grid in (grid for grid in grids if grid.run == run):
            label = f"{run}, {grid.kimg} kimg, {grid.sampler}"
            lines.append(f'<figure id="samples-{_anchor(run, grid.kimg, grid.sampler)}"><img class="grid" '
                         f'src="{_escape(grid.page_path)}" alt="samples of {_escape(label)}">'
                         f"<figcaption>{_escape(label)}</figcaption></figure>")
        lines.append("</section>")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- summary, reproduce

def _environment_rows(records: Mapping[str, Mapping[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """Distinct `env` cards (machine, commit, packages) and the dates of the results made under each."""
    cards: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for record in records.values():
        env = dict(record.get("env") or {})
        date = env.pop("date", None)
        key = json.dumps(env, sort_keys=True, default=str)
        cards.setdefault(key, (env, []))[1].append(str(date) if date else "")
    return list(cards.values())


def _wall_seconds(record: Mapping[str, Any]) -> float | None:
    seconds = (record.get("extra") or {}).get("seconds")
    return float(seconds) if isinstance(seconds, numbers.Real) and not isinstance(seconds, bool) else None


def _summary_html(records: Mapping[str, Mapping[str, Any]], frame: pd.DataFrame, tables: Sequence[Table],
                  plots: Sequence[PlotJob], grids: Sequence[SampleGrid], results_dir: Path) -> str:
    evaluators = Counter(record["evaluator"]["name"] for record in records.values())
    runs = list(dict.fromkeys(frame["run"])) if not frame.empty else []
    timed = [seconds for seconds in map(_wall_seconds, records.values()) if seconds is not None]
    wall = (f"{sum(timed):.1f} s of evaluation over the {len(timed)} of {len(records)} results that record it "
            "(<code>extra.seconds</code>)" if timed else "no result records its wall time")
    items = [("What ran", f"{len(records)} result files under <code>{_escape(results_dir)}/metrics</code> from "
              f"{len(runs)} runs ({_escape(', '.join(runs)) or 'none'}); evaluators: "
              + (_escape(", ".join(f"{name} × {count}" for name, count in evaluators.items())) or "none")),
             ("Report", f"{len(tables)} tables, {len(plots)} plots, {len(grids)} sample grids"),
             ("Wall time", wall)]
    environments = []
    for env, dates in _environment_rows(records):
        packages = ", ".join(f"{name} {version}" for name, version in (env.get("packages") or {}).items())
        known = sorted(date for date in dates if date)
        when = (known[0] if known[0] == known[-1] else f"{known[0]} to {known[-1]}") if known else "no date"
        environments.append(f"<li>{len(dates)} results, {_escape(when)}: machine "
                            f"<code>{_escape(env.get('platform', 'unknown'))}</code>, Python "
                            f"{_escape(env.get('python', '?'))}, commit <code>{_escape(env.get('git_commit'))}</code>"
                            f"; {_escape(packages or 'no package versions')}</li>")
    items.append(("Machine, commit, date", "<ul>" + "".join(environments) + "</ul>" if environments else "none"))
    return '<dl class="summary">' + "".join(f"<dt>{name}</dt><dd>{text}</dd>" for name, text in items) + "</dl>"


def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _values_text(record: Mapping[str, Any]) -> list[str]:
    """'key value' per value, '± std' folded in where `<key>_std` is recorded (with the range count and minimum for a
    mean over seed ranges), 'n/a' with the reason."""
    values, unavailable = record.get("values") or {}, record.get("unavailable") or {}
    ranges = (record.get("protocol") or {}).get("seed_ranges")
    shown = []
    for key, value in values.items():
        if key.endswith("_std") and key.removesuffix("_std") in values:
            continue
        if ranges and key.endswith("_min") and key.removesuffix("_min") in values:
            continue
        if value is None:
            reason = str(unavailable.get(key, "no reason recorded")).removeprefix("unavailable:").strip()
            shown.append(f"{key} n/a ({reason})")
            continue
        std = values.get(f"{key}_std")
        shown.append(f"{key} {_format_value(value)}" + (f" ± {_format_value(std)}" if std is not None else ""))
        if ranges and std is not None:
            shown[-1] += (f" (std over {ranges.get('count')} seed ranges, min "
                          f"{_format_value(values.get(f'{key}_min'))})")
        boot = (record.get("extra") or {}).get("fid_bootstrap") if key == "fid" else None
        if isinstance(boot, Mapping) and all(isinstance(boot.get(name), numbers.Real) for name in ("std", "p2.5", "p97.5")):
            shown[-1] += (f" (bootstrap over the samples: ± {_format_value(float(boot['std']))}, 95% "
                          f"[{_format_value(float(boot['p2.5']))}, {_format_value(float(boot['p97.5']))}], "
                          f"{boot.get('resamples')} resamples, seed {boot.get('seed')})")
    return shown


def _results_html(records: Mapping[str, Mapping[str, Any]], frame: pd.DataFrame, grids: Sequence[SampleGrid]) -> str:
    with_grid = {(grid.run, grid.kimg, grid.sampler) for grid in grids}
    lines = ['<div class="table-wrap"><table><thead><tr><th>Result file</th><th>Run</th><th>kimg</th><th>Sampler</th>'
             "<th>Evaluator</th><th>Wall time (s)</th><th>Values</th></tr></thead><tbody>"]
    for _, row in frame.iterrows():
        record = records[row["path"]]
        kimg = None if pd.isna(row["kimg"]) else int(row["kimg"])
        sampler = _escape(row["sampler"])
        if (row["run"], kimg, row["sampler"]) in with_grid:
            sampler = f'<a href="#samples-{_anchor(row["run"], kimg, row["sampler"])}">{sampler}</a>'
        evaluator = record["evaluator"]
        seconds = _wall_seconds(record)
        values = _card_details(_escape("; ".join(_values_text(record))), [measured_card(row["path"], record)])
        lines.append(f'<tr id="result-{_anchor(row["path"])}"><td><code>{_escape(row["path"])}</code></td>'
                     f"<td>{_escape(row['run'])}</td><td class=\"number\">{'' if kimg is None else kimg}</td>"
                     f"<td>{sampler}</td><td>{_escape(evaluator['name'])} ({_escape(evaluator.get('backend'))}, "
                     f"v{_escape(evaluator.get('version'))})</td>"
                     f"<td class=\"number\">{'' if seconds is None else f'{seconds:.1f}'}</td><td>{values}</td></tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def recorded_commands(record: Any) -> list[str]:
    """Every command line a record holds (`command`, `build_command` at any depth), in order of appearance."""
    found: list[str] = []
    if isinstance(record, Mapping):
        for key, value in record.items():
            if key in _COMMAND_KEYS and isinstance(value, str) and value:
                found.append(value)
            else:
                found += recorded_commands(value)
    elif isinstance(record, list):
        for item in record:
            found += recorded_commands(item)
    return list(dict.fromkeys(found))


def _recorded_inputs(record: Mapping[str, Any]) -> list[str]:
    """The files and settings a result names, for results that record no command line."""
    reference = (record.get("protocol") or {}).get("reference")
    inputs = [("network", (record.get("model") or {}).get("network")),
              ("samples", (record.get("samples") or {}).get("path")),
              ("reference", (record.get("extra") or {}).get("reference_path")
               or (reference.get("file") if isinstance(reference, Mapping) else None)),
              ("sampler", (record.get("sampler") or {}).get("name"))]
    return [f"{name}: {value}" for name, value in inputs if value]


def _reproduce_html(records: Mapping[str, Mapping[str, Any]], report_command: str) -> str:
    lines = ["<p>This page, report.md, the tables and the plots:</p>",
             f'<pre class="command">{_escape(report_command)}</pre>',
             "<p>Each result as its JSON records it: the command lines it holds, else the inputs it names.</p>",
             '<div class="table-wrap"><table><thead><tr><th>Result file</th><th>Recorded</th></tr></thead><tbody>']
    for path, record in records.items():
        commands = recorded_commands(record)
        shown = ("".join(f'<pre class="command">{_escape(command)}</pre>' for command in commands) if commands
                 else "no command line recorded; inputs: " + _escape("; ".join(_recorded_inputs(record)) or "none"))
        lines.append(f'<tr><td><a href="#result-{_anchor(path)}"><code>{_escape(path)}</code></a></td>'
                     f"<td>{shown}</td></tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- page

def render_page(*, results_dir: Path, frame: pd.DataFrame, published: Sequence[PublishedRow],
                tables: Sequence[Table], plots: Sequence[PlotJob], skipped: Sequence[Skipped],
                grids: Sequence[SampleGrid], report_command: str) -> str:
    """The page as one string; `frame` is `collect_results(results_dir)`, `tables` the report's tables."""
    records = {path: read_result(results_dir / path) for path in frame["path"]} if not frame.empty else {}

    def tables_of(selected: Iterable[Table], absent: str, written: bool = True) -> str:
        rendered = [table_html(table, records, published, written) for table in selected]
        return "\n".join(rendered) if rendered else f"<p>{_escape(absent)}</p>"

    main = [table for table in tables if table.name.startswith("main-")]
    ablations = [table for table in tables if table.name.startswith("ablation-")]
    text_to_image = [table for table in tables if table.name == "t2i"]
    sections = [
        ("summary", "Summary", _summary_html(records, frame, tables, plots, grids, results_dir)),
        ("main", "Main tables", tables_of(main, "No class-conditional table.")),
        ("ablations", "Ablations", tables_of(ablations, "No result names an ablation group (run.group).")),
        ("latent-vs-pixel", "Latent vs pixel at matched compute", tables_of(
            latent_vs_pixel_tables(frame), "No setting holds both latent and pixel results with training compute.",
            written=False)),
        ("text-to-image", "Text-to-image", tables_of(text_to_image, "No text-to-image result.")),
        ("plots", "Plots", _plots_html(plots, skipped)),
        ("samples", "Sample grids", _grids_html(grids)),
        ("results", "Result files", _results_html(records, frame, grids)),
        ("reproduce", "How to reproduce", _reproduce_html(records, report_command)),
    ]
    nav = " ".join(f'<a href="#{anchor}">{_escape(title)}</a>' for anchor, title, _ in sections)
    body = "\n".join(f'<section id="{anchor}"><h2>{_escape(title)}</h2>\n{content}\n</section>'
                     for anchor, title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>pixeldit-bench report</title><style>\n{STYLESHEET.read_text()}</style></head>\n"
            f"<body><h1>pixeldit-bench report</h1>\n<nav>{nav}</nav>\n"
            "<p>Regenerated from the result JSONs and the published-number registry; rows in grey are published "
            "numbers, not reruns. Click a number for its protocol card.</p>\n"
            f"{body}\n</body></html>\n")


def write_html(out_dir: Path, *, results_dir: Path, frame: pd.DataFrame, published: Sequence[PublishedRow],
               tables: Sequence[Table], plots: Sequence[PlotJob], skipped: Sequence[Skipped],
               report_command: str) -> Path:
    """Copy the sample grids beside the page and write `<out_dir>/index.html`; return its path."""
    grids = copy_sample_grids(results_dir, out_dir)
    index = out_dir / "index.html"
    index.write_text(render_page(results_dir=results_dir, frame=frame, published=published, tables=tables,
                                 plots=plots, skipped=skipped, grids=grids, report_command=report_command),
                     encoding="utf-8")
    return index
