"""Typer commands of the reporting layer, mounted on `pixeldit-bench` by `pixeldit/cli/main.py`:
`report` (a command) and `baselines` (a group)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table as RichTable

from pixeldit.cli.console import console, exits_on
from pixeldit.report.build import build_report
from pixeldit.report.published import PUBLISHED_DIR, PublishedRegistryError, load_published
from pixeldit.report.render import MISSING, number_cell
from pixeldit.report.tables import DPG_METRICS, GENEVAL_METRICS, IMAGENET_METRICS, setting_title

baselines_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                            help="Published baseline numbers (the registry in pixeldit/report/published/).")


def report(
    results: Annotated[Path, typer.Option(
        help="Results folder holding metrics/, runs/ and samples/.")] = Path("results"),
    out: Annotated[Optional[Path], typer.Option(
        help="Output folder (default: RESULTS/report).")] = None,
    allow_mixed: Annotated[bool, typer.Option(
        "--allow-mixed", help="Put results with different protocol cards in one table, each marked with its card.")
    ] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Read everything, print what would be written, write nothing.")] = False,
) -> None:
    """Regenerate every table (Markdown, LaTeX, CSV) and plot (PNG, SVG) from the result JSONs alone.

    Measured rows sit beside the published numbers of the same setting.
    Results scored under different protocol cards are refused in one table unless --allow-mixed is given.

    [bold]Examples[/]

        pixeldit-bench report
        pixeldit-bench report --results results --out results/report --dry-run
        pixeldit-bench report --results /scratch/results --allow-mixed
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with exits_on(FileNotFoundError, ValueError):   # ValueError covers MixedProtocolError, registry and JSON errors
        plan = build_report(results, out, allow_mixed=allow_mixed, dry_run=dry_run)
    console.print(plan.summary(), highlight=False, markup=False, soft_wrap=True)
    if dry_run:
        console.print("dry run: nothing written", style="yellow")
    else:
        console.print(f"wrote {plan.out_dir / 'report.md'}")


@baselines_app.command("list")
def list_baselines(
    setting: Annotated[Optional[str], typer.Option(
        help="Only this setting, e.g. imagenet-256, imagenet-512, t2i-1024.")] = None,
    model_type: Annotated[Optional[str], typer.Option(
        "--type", help="Only 'latent' or 'pixel' methods.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the registry files and filters, then exit.")] = False,
) -> None:
    """List the published numbers the report tables compare against, with their sources.

    [bold]Examples[/]

        pixeldit-bench baselines list
        pixeldit-bench baselines list --setting imagenet-256 --type pixel
    """
    if dry_run:
        files = ", ".join(path.name for path in sorted(PUBLISHED_DIR.glob("*.yaml")))
        console.print(f"registry: {PUBLISHED_DIR} ({files}); setting={setting or 'all'}, type={model_type or 'all'}",
                      highlight=False, markup=False)
        return
    with exits_on(PublishedRegistryError):
        rows = load_published(setting=setting, model_type=model_type)

    metrics = [column for column in IMAGENET_METRICS + GENEVAL_METRICS + DPG_METRICS
               if column.published_key and any(column.published_key in row.values for row in rows)]
    leading = ("method", "type", "epochs") if setting else ("setting", "method", "type", "epochs")
    table = RichTable(title=f"Published numbers, {setting_title(setting) if setting else 'all settings'}")
    for column in leading:
        table.add_column(column, min_width=14 if column in ("setting", "method") else None)
    for column in (*(metric.label for metric in metrics), "src"):
        table.add_column(column, justify="right")
    sources: list[str] = []   # long source texts go below the table, cited by number, to keep rows narrow
    for row in rows:
        if row.source not in sources:
            sources.append(row.source)
        cells = {"setting": row.setting, "method": row.method + (" *" if row.confidence else ""), "type": row.type,
                 "epochs": "" if row.epochs is None else f"{row.epochs:g}"}
        table.add_row(*(cells[column] for column in leading),
                      *(number_cell(row.values.get(metric.published_key), metric.decimals).text.replace(MISSING, "")
                        for metric in metrics),
                      f"[{sources.index(row.source) + 1}]")
    console.print(table)
    for number, source in enumerate(sources, start=1):
        console.print(f"[{number}] {source}", highlight=False, markup=False)
    if any(row.confidence for row in rows):
        console.print("* the registry YAML carries a confidence note for this row", highlight=False, markup=False)
