"""Image arithmetic every layer shares: ADM's centre crop, uint8 -> the model's [-1, 1], and back (two conventions).

The crop follows guided-diffusion's `center_crop_arr` (`guided_diffusion/image_datasets.py`): halve the image
with a BOX filter while its short side is at least twice the target, resize the short side to the target
with BICUBIC, then cut the centre square. The halving steps are part of the protocol: a single BICUBIC
resize gives different pixels, and so different statistics from ADM's reference batches.
"""
from __future__ import annotations

import numpy as np
import torch
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


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W in 0..255 → float32 in [-1, 1], the model's input range."""
    return images.to(torch.float32) / 127.5 - 1.0


QUANTIZATIONS = ("round", "floor")


def quantize(images: torch.Tensor, convention: str = "round") -> np.ndarray:
    """(B, 3, H, W) float tensor in [-1, 1] -> (B, H, W, 3) uint8.

    ``round`` (default) is the PixelDiT reference's ``clip((x + 1)·127.5 + 0.5, 0, 255)`` truncated to uint8,
    i.e. round half up (DiT does the same); ``floor`` is ADM's ``image_sample.py``, ``clip((x + 1)·127.5, 0,
    255)`` truncated. The two shift FID slightly, so every sample set records its choice.
    """
    if convention not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {convention!r}; choose one of {', '.join(QUANTIZATIONS)}")
    scaled = (images.float() + 1) * 127.5 + (0.5 if convention == "round" else 0.0)
    return scaled.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
