"""The external files GenEval scoring loads, in the project's weights registry (`pixeldit-bench weights list`)."""
from __future__ import annotations

import functools
from pathlib import Path

from pixeldit.infra.files import sha256_file
from pixeldit.infra.weights import WeightFile, register_weight

CLIP_WEIGHTS = register_weight(WeightFile(
    name="geneval-clip-vit-l-14",
    # OpenAI's own file; its folder name is the file's sha256 (OpenAI's loader checks it the same way).
    url="https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    filename="geneval/clip-ViT-L-14-openai.pt",
    licence="MIT (OpenAI CLIP)",
    sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    description="OpenAI CLIP ViT-L/14 (GenEval colour classifier)"))

MMDET_WEIGHTS = register_weight(WeightFile(
    name="geneval-mask2former-mmdet",
    url="https://download.openmmlab.com/mmdetection/v3.0/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco/"
        "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth",
    filename="geneval/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth",
    licence="Apache-2.0 (OpenMMLab)",
    description="Mask2Former Swin-S COCO instance checkpoint for mmdet 3.x (GenEval detector)"))
# OpenMMLab names a checkpoint after the first 8 hex digits of its sha256; the full digest is not
# published, so that prefix is what can be checked offline (the full one goes into the protocol card).
MMDET_SHA256_PREFIX = "c9d0c4f2"

HF_REPO = "facebook/mask2former-swin-small-coco-instance"
# Hub files have no published checksum reachable offline; the protocol card records their sha256.
HF_FILES = [register_weight(WeightFile(
    name=f"geneval-mask2former-hf-{kind}",
    url=f"https://huggingface.co/{HF_REPO}/resolve/main/{filename}",
    filename=f"geneval/mask2former-swin-small-coco-instance/{filename}",
    licence=f"see the model card of {HF_REPO}",
    description=f"Mask2Former Swin-S COCO instance {kind} for transformers (GenEval detector)"))
    for kind, filename in (("config", "config.json"), ("weights", "pytorch_model.bin"))]


@functools.lru_cache(maxsize=None)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a weights file for the protocol card, hashed once per process (files of hundreds of MB)."""
    stat = Path(path).stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)
