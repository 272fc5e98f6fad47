"""Reporting layer: result JSONs + the published-number registry -> paper-style tables and plots.

    collect.py     results/metrics/**/*.json -> one pandas DataFrame
    published.py   published/*.yaml (versioned data) -> validated `PublishedRow`s
    compare.py     two result JSONs (or a result and a published row) -> the protocol fields that differ, verdicts
    tables.py      main (ImageNet 256/512 + measured datasets), ablation and text-to-image tables
    render.py      one table model -> Markdown, LaTeX (booktabs), CSV
    plots.py       FID vs kimg / guidance / GFLOPs, loss curves, sample grids (PNG + SVG)
    build.py       `build_report`: everything above, plus the report.md index
    cli.py         the `report` and `baselines list` commands
"""
from pixeldit.report.build import build_report
from pixeldit.report.collect import collect_results
from pixeldit.report.published import load_published

__all__ = ["build_report", "collect_results", "load_published"]
