"""`pixeldit-bench ref ...`: the registry of reference statistics (list, fetch, verify) and building your own.

This is the home of every reference command; `pixeldit-bench eval imagenet ref ...` is the same group under the
ImageNet benchmark (the workflow calls `eval imagenet ref build`). `build` and `info` are written in
`pixeldit/cli/eval_imagenet.py` beside the evaluator's other options and are mounted here too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.reference import open_reference
from evaluators.imagenet.reference_registry import REFERENCES, ReferenceEntry, get_reference_entry
from pixeldit.cli.console import console, exits_on, fail
from pixeldit.cli.eval_imagenet import ref_app as imagenet_ref_commands
from pixeldit.infra import weights
from pixeldit.infra.files import sha256_file

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="Reference statistics: the registry (list, fetch, verify) and your own (build, info).")


def _pin(entry: ReferenceEntry) -> str:
    if entry.sha256:
        return f"sha256 {entry.sha256[:12]}…"
    return "card" if entry.card else "no (unpinned)"


def _facts(entry: ReferenceEntry) -> dict:
    present = entry.location.is_file()
    return {"name": entry.name, "file": entry.filename, "format": entry.format, "resolution": entry.resolution,
            "url": entry.url, "sha256": entry.sha256, "size": entry.size, "sha256_source": entry.sha256_source,
            "pinned_card": entry.card or None, "build_command": entry.build_command, "location": str(entry.location),
            "present": present, "contents": entry.contents, "metrics": entry.metrics, "licence": entry.licence,
            "source": entry.source, "description": entry.description}


@app.command("list")
def ref_list(as_json: Annotated[bool, typer.Option("--json", help="Every fact of every entry as JSON.")] = False) -> None:
    """Show the registered reference sets: file, resolution, what is pinned, whether it is here, licence.

    [b]Examples[/b]
      pixeldit-bench ref list
      pixeldit-bench ref list --json
    """
    entries = [REFERENCES[name] for name in sorted(REFERENCES)]
    if as_json:
        console.print_json(json.dumps([_facts(entry) for entry in entries]))
        return
    table = Table(title=f"reference statistics (downloads go to {weights.weights_dir()})")
    for column in ("name", "file", "res", "format", "pinned", "present", "metrics from the file", "licence"):
        table.add_column(column)
    for entry in entries:
        from_file = ", ".join(metric for metric, arrays in entry.metrics.items()
                              if not arrays.startswith(("unavailable", "none")))
        table.add_row(entry.name, entry.filename, str(entry.resolution), entry.format, _pin(entry),
                      "yes" if entry.location.is_file() else "no", from_file, entry.licence)
    console.print(table)
    console.print("`ref list --json` gives each entry's URL, sha256 source, arrays and citation.")


@app.command("fetch")
def ref_fetch(
    names: Annotated[list[str], typer.Argument(help="Registry names, see `ref list`.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be downloaded and where.")] = False,
) -> None:
    """Download registered reference files and check them (needs a network connection).

    A pinned entry's sha256 must match before the file is kept; for an unpinned one the sha256 of the
    download is printed, to be compared with another source before it is trusted.

    [b]Examples[/b]
      pixeldit-bench ref fetch adm-imagenet256
      pixeldit-bench ref fetch edm2-img512 --dry-run
    """
    for name in names:
        with exits_on(KeyError, ImageNetEvalError):
            entry = get_reference_entry(name)
            if entry.url is None:
                raise fail(f"{name} is built by the harness, not downloaded: {entry.obtain_hint()}")
            if dry_run:
                state = "present at" if entry.location.is_file() else f"would download {entry.url} to"
                console.print(f"{name}: {state} {entry.location}", highlight=False)
                continue
            path = weights.fetch(name)
            reference = open_reference(path, name=name)     # readable, and the arrays the entry promises
        if entry.sha256:
            console.print(f"{name}: {path} ({reference.verified})", highlight=False)
        else:
            console.print(f"{name}: {path}\n  unpinned: no public sha256 is known for this file; this download's "
                          f"sha256 is {sha256_file(path)} ({path.stat().st_size} bytes). Compare it with another "
                          f"source before trusting it.", highlight=False)


@app.command("verify")
def ref_verify(
    targets: Annotated[Optional[list[str]], typer.Argument(
        help="Registry names or reference files (default: every registered file that is present).")] = None,
    reference_name: Annotated[Optional[str], typer.Option(
        "--reference-name", help="Check the given files against this registry entry.")] = None,
) -> None:
    """Check reference files against the registry (pinned sha256, a built entry's card, internal checksums).

    A registry name checks the file where the registry keeps it; a path is checked against the entry whose file
    name it has (or `--reference-name`); files `ref build` wrote also verify their internal checksum.

    [b]Examples[/b]
      pixeldit-bench ref verify
      pixeldit-bench ref verify adm-imagenet256
      pixeldit-bench ref verify refs/VIRTUAL_imagenet256_labeled.npz
      pixeldit-bench ref verify copy.npz --reference-name adm-imagenet256
    """
    targets = targets or [name for name in sorted(REFERENCES) if REFERENCES[name].location.is_file()]
    if not targets:
        console.print("no registered reference file is present (`ref list` shows where each one goes)")
        return
    for target in targets:
        is_name = target in REFERENCES and not Path(target).exists() and reference_name is None
        with exits_on(KeyError, ImageNetEvalError):
            if is_name:
                reference = open_reference(None, name=target)
            else:
                reference = open_reference(target, name=reference_name)
        label = reference.registry.name if reference.registry else "not in the registry"
        how = reference.verified or (f"internal checksum ok; sha256 {reference.sha256}" if reference.card
                                     else f"sha256 {reference.sha256} (nothing to compare it with)")
        console.print(f"{target}: {label}: {how} ({reference.path})", highlight=False)


app.registered_commands.extend(imagenet_ref_commands.registered_commands)   # build, info
