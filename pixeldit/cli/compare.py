"""`pixeldit-bench compare A B`: which protocol fields of two numbers differ, and can they be put side by side.

The field knowledge (where each field sits, its known effect, its verdict) is `pixeldit.report.compare`'s
registry; the measurements of `--explain` are `pixeldit.explain`'s; this module parses, calls and prints. Exit codes
(with or without `--explain`): 0 comparable, 5 comparable with caveat, 3 not comparable (a failed check), 1 a side
cannot be read.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from pixeldit.cli.console import EXIT_CAVEAT, EXIT_CHECK_FAILED, console, exits_on
from pixeldit.explain import Explanation, explain
from pixeldit.report.compare import CompareInputError, Comparison, Verdict, compare
from pixeldit.report.published import PublishedRegistryError

EXIT_FOR_VERDICT = {Verdict.COMPARABLE: 0, Verdict.CAVEAT: EXIT_CAVEAT, Verdict.NOT_COMPARABLE: EXIT_CHECK_FAILED}
_VERDICT_STYLE = {Verdict.COMPARABLE: "green", Verdict.CAVEAT: "yellow", Verdict.NOT_COMPARABLE: "bold red"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _cell(value: Any) -> str:
    """A table cell: 'unknown' for a missing value, sha256 digests shortened (--json keeps them whole)."""
    if value is None:
        return "unknown"
    if isinstance(value, str):
        return f"{value[:12]}…" if _SHA256.fullmatch(value) else value
    return json.dumps(value, ensure_ascii=False)


def print_comparison(comparison: Comparison, explanation: Explanation | None = None) -> None:
    """The differing fields with their notes and verdicts (and, explained, each one's measured effect), the values
    both sides report, the overall verdict."""
    a, b = comparison.a, comparison.b
    for side, letter in ((a, "A"), (b, "B")):
        console.print(f"{letter}: {side.label}" + (f" ({side.stated})" if side.stated else ""),
                      highlight=False, markup=False)
    if comparison.differences:
        table = Table(title="protocol fields that differ or are unknown on one side")
        measured_column = "measured on A's samples: A's settings → B's (difference)"
        for column in ("field", "A", "B", "verdict", "known effect") + ((measured_column,) if explanation else ()):
            table.add_column(column)
        for difference in comparison.differences:
            verdict = difference.verdict.label + (" (unknown)" if difference.unknown else "")
            # Text: values such as "[0.1, 0.9]" stay literal instead of being read as rich markup.
            cells = [Text(difference.field.name), Text(_cell(difference.a)), Text(_cell(difference.b)),
                     Text(verdict, style=_VERDICT_STYLE[difference.verdict]), Text(difference.field.note)]
            if explanation:
                cells.append(Text(explanation.effects[difference.field.name].describe()))
            table.add_row(*cells)
        console.print(table)
        if explanation and explanation.rescored is not None:
            console.print("A rescored with its own settings: " + "; ".join(
                f"{metric} {value:.6g} (recorded {explanation.recorded[metric]:.6g})"
                for metric, value in explanation.rescored.items() if metric in explanation.recorded),
                highlight=False, markup=False)
    else:
        console.print("every protocol field recorded on both sides is equal")
    if comparison.not_recorded:
        console.print(f"recorded by neither side: {', '.join(comparison.not_recorded)}", style="dim")
    if comparison.metrics:
        values = Table(title="values")
        for column in ("metric", "A", "B", "B - A"):
            values.add_column(column, justify="left" if column == "metric" else "right")
        for metric in comparison.metrics:
            values.add_row(metric.metric, f"{metric.a:.6g}", f"{metric.b:.6g}", f"{metric.difference:+.6g}")
        console.print(values)
    verdict = comparison.verdict
    console.print(f"verdict: [{_VERDICT_STYLE[verdict]}]{verdict.label}[/]")


def compare_command(
    a: Annotated[str, typer.Argument(help="A result JSON, or a published row: published:<setting>/<method>[@<epochs>].")],
    b: Annotated[str, typer.Argument(help="The other result JSON or published row.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables (same exit code).")] = False,
    explain_effects: Annotated[bool, typer.Option(
        "--explain", help="Measure each difference that rescoring can measure: A's samples and reference scored "
                          "with B's setting (backend, Fréchet route, IS splits, weights, B's reference, a smaller "
                          "sample count), beside A's own settings; the others say why not.")] = False,
    device: Annotated[Optional[str], typer.Option(help="Device of --explain's rescoring (default: cuda if present, "
                                                       "else cpu).")] = None,
) -> None:
    """Audit two numbers' protocols: every field that differs, its known effect, and a verdict.

    A field recorded on one side only is unknown and counts as a caveat. Exit code: 0 comparable,
    5 comparable with caveat, 3 not comparable, 1 a side cannot be read (also with --explain, whose
    measurements explain the verdict and never change it). `pixeldit-bench baselines list` shows the published
    rows (name: published:<setting>/<method>, with @<epochs> where a method has several).

    [b]Examples[/b]
      pixeldit-bench compare results/metrics/pixeldit-s4-0/0000020/ab2-20-cfg/imagenet.json \\
          results/metrics/rope-rmsnorm-0/0000020/ab2-20-cfg/imagenet.json
      pixeldit-bench compare results/metrics/xl-320/imagenet.json published:imagenet-256/PixelDiT-XL@320 --json
      pixeldit-bench compare a/imagenet.json b/imagenet.json --explain
    """
    with exits_on(CompareInputError, PublishedRegistryError):
        comparison = compare(a, b)
    with exits_on():
        explanation = explain(comparison, device=device) if explain_effects else None
    if as_json:
        report = comparison.as_dict()
        if explanation:
            for difference in report["differences"]:
                difference["explain"] = explanation.effects[difference["field"]].as_dict()
            report["explain"] = {"recorded_a": explanation.recorded, "rescored_a": explanation.rescored}
        console.print_json(json.dumps(report, default=str))
    else:
        print_comparison(comparison, explanation)
    raise typer.Exit(EXIT_FOR_VERDICT[comparison.verdict])
