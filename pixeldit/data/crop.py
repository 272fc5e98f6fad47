"""ADM centre crop: the preprocessing behind ImageNet reference batches and DiT/SiT/REPA/PixelDiT training.

Written from the description of guided-diffusion's `center_crop_arr` (evaluators.md §1.7): halve the image
with a BOX filter while its short side is at least twice the target, resize the short side to the target
with BICUBIC, then cut the centre square. The halving steps are part of the protocol: a single BICUBIC
resize gives different pixels, and so different statistics from ADM's reference batches.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def center_crop_arr(image: Image.Image, resolution: int) -> np.ndarray:
    """Square `resolution`×`resolution` RGB uint8 array (H×W×3) from a PIL image of any size or mode."""
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
    image = image.convert("RGB")
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.Resampling.BOX)
    scale = resolution / min(image.size)
    # Python's round (half to even), as ADM uses; the short side lands exactly on `resolution`.
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.Resampling.BICUBIC)
    pixels = np.asarray(image)                                   # H×W×3 uint8, short side == resolution
    top = (pixels.shape[0] - resolution) // 2
    left = (pixels.shape[1] - resolution) // 2
    return np.ascontiguousarray(pixels[top:top + resolution, left:left + resolution])  # res×res×3
