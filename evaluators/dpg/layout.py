"""Image layout of DPG-Bench: one 2x2 grid of 4 samples per prompt, saved as `<item_id>.png`.

Tiles are ordered top-left, top-right, bottom-left, bottom-right (the reference script's crop order).
`check_layout` reports missing, extra and wrongly sized files before any VQA call, because the
reference script silently crops black tiles out of a grid of the wrong size.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from evaluators.registry import load_task

TILES_PER_IMAGE = load_task("dpg")["samples_per_prompt"]   # a 2x2 grid
IMAGE_SUFFIX = ".png"


def tile_boxes(tile_size: int) -> list[tuple[int, int, int, int]]:
    """PIL crop boxes (left, upper, right, lower) of the 4 tiles, TL, TR, BL, BR."""
    s = tile_size
    return [(0, 0, s, s), (s, 0, 2 * s, s), (0, s, s, 2 * s), (s, s, 2 * s, 2 * s)]


def make_grid(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """Stack 4 uint8 HxWx3 square tiles of equal size into one 2Hx2W grid."""
    if len(tiles) != TILES_PER_IMAGE:
        raise ValueError(f"a DPG grid needs exactly {TILES_PER_IMAGE} samples, got {len(tiles)}")
    arrays = [np.asarray(tile) for tile in tiles]
    first = arrays[0]
    for index, array in enumerate(arrays):
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"sample {index} must be uint8 HxWx3 (RGB), got {array.dtype} {array.shape}")
        if array.shape != first.shape or array.shape[0] != array.shape[1]:
            raise ValueError(f"samples must be square and equally sized; sample {index} is {array.shape[:2]}, "
                             f"sample 0 is {first.shape[:2]}")
    top = np.concatenate(arrays[:2], axis=1)
    bottom = np.concatenate(arrays[2:], axis=1)
    return np.concatenate([top, bottom], axis=0)


def write_grid(out_dir: str | os.PathLike, item_id: str, tiles: Sequence[np.ndarray]) -> Path:
    """Write the 4 samples of one prompt as `<out_dir>/<item_id>.png` (atomic: temp file + rename)."""
    if not item_id or "/" in item_id or "." in item_id:
        raise ValueError(f"item id {item_id!r} cannot name a DPG image: it must be non-empty, without '/' or '.'")
    grid = make_grid(tiles)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{item_id}{IMAGE_SUFFIX}"
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=f".{item_id}.", suffix=".png", delete=False) as handle:
        Image.fromarray(grid).save(handle, format="PNG")
    os.replace(handle.name, target)
    return target


def crop_tiles(image: Image.Image, tile_size: int) -> list[Image.Image]:
    """The 4 RGB tiles of a grid; the grid must be exactly 2*tile_size square."""
    expected = (2 * tile_size, 2 * tile_size)
    if image.size != expected:
        raise ValueError(f"grid is {image.size[0]}x{image.size[1]}, expected {expected[0]}x{expected[1]} "
                         f"for tile size {tile_size}")
    rgb = image.convert("RGB")
    return [rgb.crop(box) for box in tile_boxes(tile_size)]


@dataclasses.dataclass
class LayoutReport:
    tile_size: int | None
    found: dict[str, Path]                 # item_id -> image path, right size
    missing: list[str]                     # expected items without an image
    extra: list[str]                       # file names that are not `<expected item>.png`
    wrong_size: dict[str, str]             # item_id -> "WxH, expected ..."
    unreadable: dict[str, str]             # item_id -> error message

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong_size or self.unreadable)

    def problems(self) -> list[str]:
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} missing: {_preview(self.missing)}")
        if self.wrong_size:
            lines.append(f"{len(self.wrong_size)} wrongly sized: "
                         f"{_preview(f'{key} ({value})' for key, value in self.wrong_size.items())}")
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} unreadable: "
                         f"{_preview(f'{key} ({value})' for key, value in self.unreadable.items())}")
        if self.extra:
            lines.append(f"{len(self.extra)} extra file(s) ignored: {_preview(self.extra)}")
        return lines


def _preview(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def check_layout(images_dir: str | os.PathLike, expected_items: Iterable[str],
                 tile_size: int | None = None) -> LayoutReport:
    """Match the folder against the expected items and check every grid's size (header read only).

    Without `tile_size`, the first readable expected image fixes it (half its width).
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    expected = list(expected_items)
    expected_set = set(expected)
    present = {path.name: path for path in images_dir.iterdir() if not path.name.startswith(".")}
    report = LayoutReport(tile_size=tile_size, found={}, missing=[], extra=[], wrong_size={}, unreadable={})
    report.extra = sorted(name for name in present
                          if not (name.endswith(IMAGE_SUFFIX) and name[:-len(IMAGE_SUFFIX)] in expected_set))
    for item_id in expected:
        path = present.get(f"{item_id}{IMAGE_SUFFIX}")
        if path is None:
            report.missing.append(item_id)
            continue
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, ValueError) as error:
            report.unreadable[item_id] = f"{type(error).__name__}: {error}"
            continue
        if report.tile_size is None and size[0] == size[1] and size[0] % 2 == 0:
            report.tile_size = size[0] // 2
        if report.tile_size is None or size != (2 * report.tile_size, 2 * report.tile_size):
            wanted = f"{2 * report.tile_size}x{2 * report.tile_size}" if report.tile_size else "an even square"
            report.wrong_size[item_id] = f"{size[0]}x{size[1]}, expected {wanted}"
            continue
        report.found[item_id] = path
    return report
