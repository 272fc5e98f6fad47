"""`pixeldit-bench data ...`: build and inspect datasets. Thin: parse, call `pixeldit.data`, print."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pixeldit.cli.console import console, exits_on, fail
from pixeldit.data.digits import DIGITS32_RESOLUTION, prepare_digits32
from pixeldit.data.folder import list_source, prepare_folder
from pixeldit.infra.datasets import DatasetError, read_manifest, rebuild_command, verify_checksums

app = typer.Typer(help="Prepare and inspect datasets (ADM centre crop → uint8 shards + manifest).",
                  no_args_is_help=True)
EMBEDDED = "digits32"
_SHOWN_SKIPPED = 20   # skipped files listed on the terminal; all of them are in dataset.json


@app.command()
def prepare(
    src: Annotated[str, typer.Argument(help="A class folder SRC/<class>/<image>, a plain .tar of one, or digits32.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create.")],
    res: Annotated[Optional[int], typer.Option("--res", help="Output resolution in pixels (digits32: 32).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Dataset name (default: the source's name).")] = None,
    split: Annotated[str, typer.Option(help="Split name recorded for a folder or tar.")] = "train",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset at --out.")] = False,
    workers: Annotated[int, typer.Option(help="Decoding processes for a folder or tar (same output).")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be written; write nothing.")] = False,
) -> None:
    """Build a dataset directory: ADM centre crop, uint8 image shards, labels and a checksummed dataset.json.

    Unreadable images are skipped, reported by path and counted under "skipped" in dataset.json.
    Writing is atomic: an interrupted prepare leaves no dataset at --out.

    Examples:

      pixeldit-bench data prepare digits32 --out results/data/digits32

      pixeldit-bench data prepare /data/imagenet/train --out data/in256 --res 256 --workers 8

      pixeldit-bench data prepare train.tar --out data/in512 --res 512 --dry-run
    """
    with exits_on(DatasetError):
        if src == EMBEDDED:
            if res not in (None, DIGITS32_RESOLUTION):
                raise fail(f"digits32 is {DIGITS32_RESOLUTION}x{DIGITS32_RESOLUTION}; drop --res or pass --res 32")
            if dry_run:
                console.print(f"would write digits32 (1,797 images, 32x32, splits train 1,297 / reference 500) "
                              f"to {out}")
                return
            path = prepare_digits32(out, overwrite=overwrite)
        else:
            if res is None:
                raise fail("--res is required for a folder or tar source, e.g. --res 256")
            if res < 1:
                raise fail(f"--res {res}: the resolution must be a positive number of pixels, e.g. --res 256")
            if dry_run:
                listing = list_source(src)
                megabytes = len(listing.files) * res * res * 3 / 2**20
                console.print(f"would write {out} from {listing.kind} {src}: {len(listing.class_names)} classes, "
                              f"{len(listing.files)} files ({len(listing.outside_classes)} outside class folders), "
                              f"at most {megabytes:,.1f} MiB at {res}x{res}")
                return
            path = prepare_folder(src, out, res, name=name, split=split, overwrite=overwrite, workers=workers,
                                  progress=True)
    _print_summary(path, read_manifest(path))


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A prepared dataset directory.")],
    verify: Annotated[bool, typer.Option(help="Recompute every file's sha256 against the manifest.")] = True,
) -> None:
    """Print a dataset's manifest summary and verify its checksums (exit code 1 on any mismatch).

    Examples:

      pixeldit-bench data info results/data/digits32

      pixeldit-bench data info data/in256 --no-verify
    """
    with exits_on(DatasetError):
        manifest = read_manifest(path)
    _print_summary(path, manifest)
    if not verify:
        return
    bad = verify_checksums(path, manifest)
    if bad:
        raise fail(f"checksum mismatch or missing file in {path}: {', '.join(bad)}; rebuild with "
                   f"`{rebuild_command(path, manifest)}`")
    console.print(f"checksums: all {len(manifest['shards']) + 1} files match")


def _print_summary(path: Path, manifest: dict) -> None:
    source = ", ".join(f"{key}={value}" for key, value in manifest["source"].items())
    splits = ", ".join(f"{name} {stop - start:,}" for name, (start, stop) in manifest["splits"].items())
    skipped = manifest["skipped"]
    console.print(f"[bold]{manifest['name']}[/bold] at {path}\n"
                  f"  images:        {manifest['count']:,} at {manifest['resolution']}x{manifest['resolution']} "
                  f"in {len(manifest['shards'])} shard(s)\n"
                  f"  classes:       {manifest['num_classes']}\n"
                  f"  splits:        {splits}\n"
                  f"  source:        {source}\n"
                  f"  preprocessing: {manifest['preprocessing']}\n"
                  f"  skipped:       {skipped['count']}", highlight=False)
    for entry in skipped["files"][:_SHOWN_SKIPPED]:
        console.print(f"    {entry['path']}: {entry['reason']}", highlight=False)
    if skipped["count"] > _SHOWN_SKIPPED:
        console.print(f"    ... {skipped['count'] - _SHOWN_SKIPPED} more in {Path(path) / 'dataset.json'}")
