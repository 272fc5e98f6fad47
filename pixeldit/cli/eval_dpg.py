"""Thin CLI of the DPG-Bench evaluator; `pixeldit/cli/main.py` mounts it.

Mount: ``eval_app.command("dpg")(eval_dpg)`` and ``app.add_typer(dpg_app, name="dpg")``.
Exit codes (`pixeldit.cli.console`): 1 invalid question CSV, 3 incomplete coverage, 4 weights or optional
backend missing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from evaluators.dpg.evaluate import CoverageError, layout_for, modes_for
from evaluators.dpg.questions import QuestionCSVError, load_questions
from evaluators.dpg.vqa import BACKENDS, VQABackendUnavailable
from evaluators.registry import evaluate, load_task
from pixeldit.cli.console import EXIT_CHECK_FAILED, EXIT_MISSING_FILE, exits_on, fail
from pixeldit.infra.progress import Progress
from pixeldit.infra.weights import MissingWeightsError

dpg_app = typer.Typer(help="DPG-Bench helpers: check an image folder, summarise a question CSV.",
                      no_args_is_help=True)

QuestionsOption = Annotated[Optional[Path], typer.Option(
    "--questions", help="Question CSV in ELLA's format (default: the registered dpg-questions file).")]
TileSizeOption = Annotated[Optional[int], typer.Option(
    "--tile-size", min=1, help="Side of one sample in pixels (default: half the first grid's width).")]


def _questions_or_exit(questions: Path | None):
    with exits_on(QuestionCSVError):
        return load_questions(questions)


def eval_dpg(
    images_dir: Annotated[Path, typer.Argument(help="Folder of 2x2 grids named <item_id>.png.")],
    vqa: Annotated[str, typer.Option(help=f"VQA backend: {' | '.join(BACKENDS)}.")] = "transformers",
    mode: Annotated[str, typer.Option(help="reference (ELLA script) | corrected | both.")] = "both",
    questions: QuestionsOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Result JSON (default: <IMAGES_DIR>-dpg.json).")] = None,
    vqa_model: Annotated[Optional[str], typer.Option(
        help="Local model folder or cached hub id (default: the backend's reference model).")] = None,
    tile_size: TileSizeOption = None,
    allow_missing: Annotated[bool, typer.Option(
        help="Score what is there when images or answers are missing; the result records the coverage.")] = False,
    cache: Annotated[Optional[Path], typer.Option(
        help="Answer cache for resuming (default: <IMAGES_DIR>-dpg-answers.jsonl).")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Questions per VQA forward pass.")] = 32,
    dry_run: Annotated[bool, typer.Option(help="Check questions and images, print the plan, write nothing.")] = False,
) -> None:
    """Score a folder of DPG-Bench grids with yes/no VQA (reference and corrected aggregation).

    Examples:
        pixeldit-bench eval dpg samples/t2i/dpg --dry-run
        pixeldit-bench eval dpg samples/t2i/dpg --vqa modelscope --mode reference --out metrics/dpg.json
        pixeldit-bench eval dpg samples/t2i/dpg --questions my.csv --allow-missing --device cuda
    """
    try:
        modes_for(mode)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--mode") from None
    if vqa not in BACKENDS:
        raise typer.BadParameter(f"choose one of {', '.join(BACKENDS)}", param_hint="--vqa")
    out = out or images_dir.with_name(f"{images_dir.name}-dpg.json")
    graph = _questions_or_exit(questions)
    try:
        layout = layout_for(images_dir, graph, tile_size, allow_missing)
    except (CoverageError, FileNotFoundError) as error:
        raise fail(str(error), EXIT_CHECK_FAILED)
    for line in layout.problems():
        typer.echo(f"warning: {line}", err=True)
    if dry_run:
        calls = sum(len(graph.items[item]) for item in layout.found) * load_task("dpg")["samples_per_prompt"]
        typer.echo(f"would score {len(layout.found)}/{len(graph.items)} items (tile {layout.tile_size}px) with "
                   f"{vqa}, mode {mode}: up to {calls} VQA answers; result -> {out}")
        return
    try:
        with Progress(len(layout.found), "DPG VQA", unit="item") as bar:
            record = evaluate("dpg", [images_dir], out, vqa=vqa, vqa_model=vqa_model, mode=mode,
                              questions=graph.path, tile_size=layout.tile_size, allow_missing=allow_missing,
                              cache_path=cache, device=device, batch_size=batch_size,
                              progress=lambda done, total: bar.update(1))
    except CoverageError as error:
        raise fail(str(error), EXIT_CHECK_FAILED)
    except (MissingWeightsError, VQABackendUnavailable) as error:
        raise fail(str(error), EXIT_MISSING_FILE)
    for name in modes_for(mode):
        typer.echo(f"DPG-Bench ({name}): {record['values'].get(f'dpg_score_{name}')}")
    typer.echo(f"coverage {record['values']['coverage']:.4f}; result written to {out}")


@dpg_app.command("check")
def check(
    images_dir: Annotated[Path, typer.Argument(help="Folder of 2x2 grids named <item_id>.png.")],
    questions: QuestionsOption = None,
    tile_size: TileSizeOption = None,
) -> None:
    """Report missing, extra and wrongly sized grids, without any VQA.

    Examples:
        pixeldit-bench eval dpg check samples/t2i/dpg --tile-size 512
    """
    graph = _questions_or_exit(questions)
    try:
        layout = layout_for(images_dir, graph, tile_size, allow_missing=True)
    except FileNotFoundError as error:
        raise fail(str(error), EXIT_CHECK_FAILED)
    typer.echo(f"{len(layout.found)}/{len(graph.items)} grids ok (tile {layout.tile_size}px)")
    for line in layout.problems():
        typer.echo(line)
    if not layout.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


@dpg_app.command("questions")
def questions_summary(
    csv_path: Annotated[Optional[Path], typer.Argument(help="Question CSV (default: the registered one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Validate a question CSV and summarise items, questions and categories.

    Examples:
        pixeldit-bench eval dpg questions
        pixeldit-bench eval dpg questions my_questions.csv --json
    """
    graph = _questions_or_exit(csv_path)
    categories: dict[str, int] = {}
    for item_questions in graph.items.values():
        for question in item_questions:
            categories[question.category_l2] = categories.get(question.category_l2, 0) + 1
    summary = {"path": str(graph.path), "git_blob": graph.git_blob, "official": graph.is_official,
               "items": len(graph.items), "questions": graph.question_count,
               "first_row": {"item_id": graph.first_row().item_id, "proposition_id": graph.first_row().proposition_id},
               "categories": dict(sorted(categories.items()))}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        typer.echo(f"{key}: {value}")
