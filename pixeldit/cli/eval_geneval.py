"""Thin CLI of the GenEval evaluator; `pixeldit/cli/main.py` mounts it.

Mount: ``eval_app.add_typer(geneval_app, name="geneval")``. Then
``pixeldit-bench eval geneval IMAGES_DIR`` scores a folder (the default command, `score`), and
``pixeldit-bench eval geneval prompts|summary|check`` are the helpers.
Exit codes (`pixeldit.cli.console`): 0 ok, 1 bad input, 2 usage, 4 missing or mismatched weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

import evaluators.geneval as geneval
from evaluators.geneval import prompts
from evaluators.geneval.detectors import CompiledOpsError, check_mmcv_ops
from evaluators.geneval.evaluate import ProtocolMismatchError
from evaluators.geneval.summary import format_summary, read_results, summarize
from evaluators.registry import evaluate
from pixeldit.cli.console import EXIT_CHECK_FAILED, EXIT_MISSING_FILE, default_command_group, exits_on, fail
from pixeldit.infra.devices import resolve_device
from pixeldit.infra.progress import track
from pixeldit.infra.weights import MissingWeightsError

geneval_app = typer.Typer(cls=default_command_group("score"), no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                          help="GenEval: score a folder of text-to-image samples (Mask2Former + CLIP colours). "
                               "`geneval IMAGES_DIR …` is short for `geneval score IMAGES_DIR …`.")


def _resolve_device(device: str) -> str:
    return str(resolve_device(device))


@geneval_app.command("score")
def score(
    images_dir: Annotated[Path, typer.Argument(help="Folder holding 00000/metadata.jsonl, 00000/samples/0000.png, …")],
    detector: Annotated[str, typer.Option(help="Detector backend: mmdet (the reference's) | transformers.")] = "mmdet",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    out: Annotated[Optional[Path], typer.Option(
        help="The result JSON (FILE.json; per-image results and the detection cache go in the folder FILE "
             "beside it), or a folder for results.jsonl, geneval.json and the cache (default: "
             "<IMAGES_DIR>-geneval).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count images and check weights; load and write nothing.")] = False,
) -> None:
    """Score every image and write per-image results plus the result JSON; reruns resume.

    [b]Examples[/b]
      pixeldit-bench eval geneval samples/t2i/geneval --detector mmdet --device cuda
      pixeldit-bench eval geneval samples/t2i/geneval --detector transformers --out metrics/t2i/geneval.json
      pixeldit-bench eval geneval samples/t2i/geneval --dry-run
    """
    result_file = out if out is not None and out.suffix == ".json" else None
    out = result_file.with_suffix("") if result_file else out or images_dir.with_name(images_dir.name + "-geneval")
    with exits_on(CompiledOpsError, ProtocolMismatchError, FileNotFoundError, ValueError):
        samples = list(prompts.iter_samples(images_dir))
        if dry_run:
            done = {row["filename"] for row in read_results(out / "results.jsonl")} if (out / "results.jsonl").exists() else set()
            todo = sum(sample.name not in done for sample in samples)
            typer.echo(f"{len(samples)} images in {images_dir}; {len(samples) - todo} already scored in {out}; {todo} to score")
            geneval.require_weights(detector)
            typer.echo("weights: present")
            return
        record = evaluate("geneval", [images_dir, out], result_file or out / "geneval.json", detector=detector,
                          device=_resolve_device(device), progress=lambda items: track(items, "GenEval"))
    typer.echo(format_summary(summarize(read_results(out / "results.jsonl"))))
    typer.echo(f"wrote {result_file or out / 'geneval.json'} (overall {record['values']['overall']:.5f})")


@geneval_app.command("prompts")
def write_prompts(
    out: Annotated[Path, typer.Option("--out", help="Folder to create the 553 prompt folders in.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be written; write nothing.")] = False,
) -> None:
    """Write the benchmark's folder layout for a generator to fill: <index>/metadata.jsonl and samples/.

    A generator then saves 4 images per prompt as <index>/samples/0000.png … 0003.png
    (`evaluators.geneval.prompts.sample_path`).

    [b]Examples[/b]
      pixeldit-bench eval geneval prompts --out samples/t2i/geneval
    """
    try:
        prompts.verify_data()
        metadata = prompts.load_metadata()
    except ValueError as error:
        raise fail(str(error))
    if dry_run:
        typer.echo(f"would write {len(metadata)} folders {prompts.prompt_dir(out, 0)} … "
                   f"{prompts.prompt_dir(out, len(metadata) - 1)}, {prompts.SAMPLES_PER_PROMPT} samples expected in each")
        return
    folders = prompts.write_prompt_folders(out, metadata)
    typer.echo(f"wrote {len(folders)} prompt folders under {out}")


@geneval_app.command("summary")
def summary(
    results: Annotated[Path, typer.Argument(help="A GenEval results.jsonl (this harness's or the reference's).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the reference's text.")] = False,
) -> None:
    """Print per-task accuracy, % correct images/prompts and the overall score of a results file.

    [b]Examples[/b]
      pixeldit-bench eval geneval summary metrics/t2i/geneval/results.jsonl
    """
    try:
        numbers = summarize(read_results(results))
    except (OSError, ValueError) as error:
        raise fail(str(error))
    typer.echo(json.dumps(numbers, indent=2) if as_json else format_summary(numbers))


@geneval_app.command("check")
def check(
    detector: Annotated[str, typer.Option(help="mmdet | transformers.")] = "mmdet",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """Check that the detector can run correctly here: mmcv compiled ops on the device, weights present.

    [b]Examples[/b]
      pixeldit-bench eval geneval check --detector mmdet --device cuda
    """
    try:
        if detector == "mmdet":
            check_mmcv_ops(_resolve_device(device))
            typer.echo(f"mmcv compiled ops: ok on {_resolve_device(device)}")
        geneval.require_weights(detector)
    except MissingWeightsError as error:
        raise fail(str(error), EXIT_MISSING_FILE)
    except (CompiledOpsError, ValueError) as error:
        raise fail(str(error), EXIT_CHECK_FAILED)
    typer.echo("weights: present")
