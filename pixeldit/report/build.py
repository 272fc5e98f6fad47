"""`pixeldit-bench report`: every table and plot, regenerated from the result JSONs alone, plus an index.

    <out>/tables/<name>.{md,tex,csv}
    <out>/plots/<name>.{png,svg}
    <out>/report.md          links all of them, embeds the Markdown tables, lists skipped plots
    <out>/index.html         the same as one offline page (html.py), with sample grids copied to <out>/grids/
"""
from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pixeldit.report.collect import collect_results
from pixeldit.report.html import write_html
from pixeldit.report.plots import PlotJob, Skipped, plan_plots, write_plot
from pixeldit.report.published import PUBLISHED_DIR, PublishedRow, load_published
from pixeldit.report.render import Table, to_csv, to_latex, to_markdown
from pixeldit.report.tables import ablation_tables, main_tables, t2i_table

log = logging.getLogger(__name__)

_RENDERERS = {"md": to_markdown, "tex": to_latex, "csv": to_csv}


@dataclass
class ReportPlan:
    """What a report run reads and would write; `--dry-run` prints this and stops."""

    results_dir: Path
    out_dir: Path
    result_count: int
    tables: list[Table]
    plots: list[PlotJob]
    skipped: list[Skipped]
    frame: pd.DataFrame              # the results read (collect.py), for the HTML page
    published: list[PublishedRow]
    allow_mixed: bool = False

    def summary(self) -> str:
        lines = [f"results: {self.results_dir} ({self.result_count} result files)", f"output:  {self.out_dir}",
                 "tables:  " + (", ".join(table.name for table in self.tables) or "none"),
                 "plots:   " + (", ".join(plot.name for plot in self.plots) or "none")]
        lines += [f"skipped: {item.name}: {item.reason}" for item in self.skipped]
        return "\n".join(lines)


def plan_report(results_dir: str | Path, out_dir: str | Path | None = None, allow_mixed: bool = False,
                published_dir: str | Path = PUBLISHED_DIR) -> ReportPlan:
    """Read everything and build the tables in memory (this is where mixed protocols are refused)."""
    results_dir = Path(results_dir)
    frame = collect_results(results_dir)
    published = load_published(published_dir)
    tables = main_tables(frame, published, allow_mixed) + ablation_tables(frame, allow_mixed)
    text_to_image = t2i_table(frame, published, allow_mixed)
    if text_to_image is not None:
        tables.append(text_to_image)
    plans = plan_plots(frame, published, results_dir)
    return ReportPlan(results_dir=results_dir, out_dir=Path(out_dir) if out_dir else results_dir / "report",
                      result_count=len(frame), tables=tables,
                      plots=[plan for plan in plans if isinstance(plan, PlotJob)],
                      skipped=[plan for plan in plans if isinstance(plan, Skipped)], frame=frame,
                      published=published, allow_mixed=allow_mixed)


def _index(plan: ReportPlan) -> str:
    lines = ["# pixeldit-bench report", "",
             f"Regenerated from {plan.result_count} result files under `{plan.results_dir}` and the published-number "
             "registry (`pixeldit/report/published/`). Rows marked *published* are copied numbers, not reruns.", "",
             "## Tables", ""]
    for table in plan.tables:
        links = " · ".join(f"[{extension}](tables/{table.name}.{extension})" for extension in _RENDERERS)
        lines += [f"### {table.name}", "", links, "", to_markdown(table)]
    lines += ["## Plots", ""]
    for job in plan.plots:
        lines += [f"### {job.title}", "", f"![{job.title}](plots/{job.name}.png) ([svg](plots/{job.name}.svg))", ""]
    if plan.skipped:
        lines += ["## Skipped plots", ""] + [f"- `{item.name}`: {item.reason}" for item in plan.skipped] + [""]
    return "\n".join(lines)


def report_command(plan: ReportPlan) -> str:
    """The command line that regenerates this report."""
    command = ["pixeldit-bench", "report", "--results", str(plan.results_dir), "--out", str(plan.out_dir)]
    return shlex.join(command + (["--allow-mixed"] if plan.allow_mixed else []))


def write_report(plan: ReportPlan) -> Path:
    """Write every table (md, tex, csv), every plot (png, svg), report.md and index.html; return report.md."""
    tables_dir, plots_dir = plan.out_dir / "tables", plan.out_dir / "plots"
    for directory in (tables_dir, plots_dir):   # both exist even when empty: the workflow declares them
        directory.mkdir(parents=True, exist_ok=True)
    for table in plan.tables:
        for extension, render in _RENDERERS.items():
            (tables_dir / f"{table.name}.{extension}").write_text(render(table))
    for job in plan.plots:
        write_plot(job, plots_dir)
    index = plan.out_dir / "report.md"
    index.write_text(_index(plan))
    write_html(plan.out_dir, results_dir=plan.results_dir, frame=plan.frame, published=plan.published,
               tables=plan.tables, plots=plan.plots, skipped=plan.skipped, report_command=report_command(plan))
    log.info("report written to %s (%d tables, %d plots, %d skipped)", index, len(plan.tables), len(plan.plots),
             len(plan.skipped))
    return index


def build_report(results_dir: str | Path, out_dir: str | Path | None = None, allow_mixed: bool = False,
                 dry_run: bool = False) -> ReportPlan:
    """Plan the report and, unless `dry_run`, write it; returns the plan either way."""
    plan = plan_report(results_dir, out_dir, allow_mixed)
    if not dry_run:
        write_report(plan)
    return plan
