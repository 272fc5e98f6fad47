"""GenEval's vendored prompt data and the image-folder layout the benchmark scores.

Layout (djghosh13/geneval README, "Image generation")::

    IMAGES_DIR/00000/metadata.jsonl   that prompt's metadata line
                00000/samples/0000.png  4 samples per prompt (any `<digits>.png` is scored)
                00000/grid.png          optional, ignored
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from evaluators.registry import load_task

DATA = resources.files("evaluators.geneval") / "data"
METADATA_FILE = "evaluation_metadata.jsonl"
OBJECT_NAMES_FILE = "object_names.txt"
# sha1 of the files as published in djghosh13/geneval at commit af4902f (benchmarks/README.md).
SHA1 = {METADATA_FILE: "b53b022a6a1f2ce61860b33f241b00a3ba5d4d69",
        OBJECT_NAMES_FILE: "e33760913195701a8360fbf015d547af3827f3e3"}
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
SAMPLES_PER_PROMPT = load_task("geneval")["samples_per_prompt"]
_SAMPLE_NAME = re.compile(r"\d+\.png")


def data_sha1(name: str) -> str:
    return hashlib.sha1((DATA / name).read_bytes()).hexdigest()


def verify_data() -> None:
    """Refuse to score with prompt files that differ from the published ones."""
    for name, expected in SHA1.items():
        actual = data_sha1(name)
        if actual != expected:
            raise ValueError(f"vendored GenEval file {name} has sha1 {actual}, expected {expected}: "
                             f"restore it from djghosh13/geneval prompts/ (commit af4902f)")


def load_metadata() -> list[dict[str, Any]]:
    """The 553 prompt records, in benchmark order (index = folder number)."""
    return [json.loads(line) for line in (DATA / METADATA_FILE).read_text().splitlines()]


def load_object_names() -> list[str]:
    """The 80 COCO class names in the detector's label order."""
    return [line.strip() for line in (DATA / OBJECT_NAMES_FILE).read_text().splitlines()]


def prompt_dir(images_dir: str | Path, index: int) -> Path:
    return Path(images_dir) / f"{index:05d}"


def sample_path(images_dir: str | Path, index: int, sample: int) -> Path:
    """Where a generator saves sample `sample` of prompt `index`."""
    return prompt_dir(images_dir, index) / "samples" / f"{sample:04d}.png"


def write_prompt_folders(images_dir: str | Path, metadata: list[dict[str, Any]] | None = None) -> list[Path]:
    """Create `<index>/metadata.jsonl` and an empty `samples/` for every prompt; returns the folders.

    A generator then fills `sample_path(images_dir, index, 0..3)`. Existing samples are left alone.
    """
    metadata = load_metadata() if metadata is None else metadata
    folders = []
    for index, record in enumerate(metadata):
        folder = prompt_dir(images_dir, index)
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(record))
        folders.append(folder)
    return folders


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path           # absolute image path
    name: str            # path relative to the images folder, e.g. "00012/samples/0003.png"
    metadata: dict[str, Any]


def iter_samples(images_dir: str | Path) -> Iterator[Sample]:
    """Every scorable image under a GenEval folder, in folder then file-name order.

    Like the reference, prompt folders are the all-digit sub-folders and their metadata comes from
    the folder (so rewritten or subset prompt sets score as written).
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the folder holding 00000/, 00001/, …")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        metadata_path = folder / "metadata.jsonl"
        if not metadata_path.is_file():
            raise FileNotFoundError(f"{metadata_path} is missing; write the folders with "
                                    f"`pixeldit-bench eval geneval prompts --out {root}`")
        metadata = json.loads(metadata_path.read_text())
        samples = folder / "samples"
        if not samples.is_dir():
            continue
        for image in sorted(samples.iterdir()):
            if image.is_file() and _SAMPLE_NAME.fullmatch(image.name):
                yield Sample(image, image.relative_to(root).as_posix(), metadata)
