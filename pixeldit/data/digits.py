"""The embedded dataset `digits32`: scikit-learn's 1,797 real 8×8 handwritten digits as 32×32 RGB.

How each image is made: the 8×8 grey values 0..16 are scaled to 0..255 (`round(v * 255 / 16)`), upsampled
to 32×32 with PIL BICUBIC, and the grey channel is replicated to RGB.

Split: 50 images of every class (500 in all) form the `reference` split, which gives the reference
statistics, as ADM's protocol uses 50 samples per class; the other 1,297 form `train`. The choice is a
fixed permutation per class from `numpy.random.RandomState(DIGITS32_SPLIT_SEED)`, whose stream numpy keeps
frozen, so every build writes the same bytes. Images are stored train first, then reference, each in
scikit-learn's order.
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pixeldit.infra.datasets import DEFAULT_SHARD_BYTES, DatasetWriter, prepare_command

DIGITS32_RESOLUTION = 32
DIGITS32_REFERENCE_PER_CLASS = 50
DIGITS32_SPLIT_SEED = 0
PREPROCESSING = ("8x8 grey 0..16 scaled to 0..255 (round(v*255/16)), PIL BICUBIC upsampling to 32x32, grey "
                 f"replicated to RGB; reference split = {DIGITS32_REFERENCE_PER_CLASS} per class chosen by "
                 f"numpy RandomState({DIGITS32_SPLIT_SEED}) permutations, the rest is train")


def digits32_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (1797, 32, 32, 3) uint8 RGB and their labels (1797,) int64, in scikit-learn order."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn takes ~1 s to import, every CLI call would pay it

    digits = load_digits()
    grey = np.round(digits.images * (255 / 16)).astype(np.uint8)              # (1797, 8, 8), 0..255
    size = (DIGITS32_RESOLUTION, DIGITS32_RESOLUTION)
    upsampled = np.stack([np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
                          for image in grey])                                  # (1797, 32, 32)
    rgb = np.repeat(upsampled[..., None], 3, axis=-1)                          # (1797, 32, 32, 3)
    return rgb, digits.target.astype(np.int64)


def digits32_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and reference indices: a fixed, class-stratified choice of 50 reference images per class."""
    rng = np.random.RandomState(DIGITS32_SPLIT_SEED)
    reference = np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:DIGITS32_REFERENCE_PER_CLASS]
                                for label in np.unique(labels)])
    is_reference = np.zeros(len(labels), dtype=bool)
    is_reference[reference] = True
    return np.flatnonzero(~is_reference), np.flatnonzero(is_reference)


def prepare_digits32(out: str | os.PathLike, *, overwrite: bool = False,
                     shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write digits32 with splits `train` (1,297) and `reference` (500) to `out`; returns its path."""
    images, labels = digits32_images()
    train, reference = digits32_split(labels)
    with DatasetWriter(out, DIGITS32_RESOLUTION, overwrite=overwrite, shard_bytes=shard_bytes) as writer:
        for index in np.concatenate([train, reference]):
            writer.add(images[index], labels[index])
        fields = {"name": "digits32", "num_classes": 10, "class_names": [str(digit) for digit in range(10)],
                  "source": {"kind": "scikit-learn load_digits (UCI optical recognition of handwritten digits)",
                             "scikit_learn": importlib.metadata.version("scikit-learn"), "count": len(labels)},
                  "preprocessing": PREPROCESSING,
                  "prepare_command": prepare_command("digits32", writer.out, DIGITS32_RESOLUTION)}
        return writer.finish(fields, splits={"train": (0, len(train)),
                                             "reference": (len(train), len(train) + len(reference))})
