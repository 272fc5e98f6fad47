"""Mask2Former Swin-S COCO instance detectors behind one interface.

Every backend returns `ImageDetections` for one PIL image: xyxy boxes in original pixels, scores,
labels indexing GenEval's 80 class names (COCO thing order; GenEval renames three of them, so the
index is what matches, as in the reference), and boolean instance masks at the image's size.

* ``mmdet``: mmdet 3.3 + mmcv 2.1 (built from source), the config GenEval uses and the mmdet 3.x
  checkpoint of the same training run as GenEval's 2.x one. A self-check refuses to run when
  mmcv's compiled ops are missing or multi-scale deformable attention is wrong on the device —
  the reference keeps going and reports silently wrong scores then.
* ``transformers``: `Mask2FormerForUniversalSegmentation` with the facebook Swin-S COCO instance
  weights; pre- and post-processing follow the mmdet test pipeline (keep-ratio resize into
  1333x800, ImageNet mean/std, pad to /32; softmax scores x mask score, top 100, boxes from masks).
"""
from __future__ import annotations

import abc
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from evaluators.geneval.rules import ImageDetections
from evaluators.geneval.weights import HF_FILES, HF_REPO, MMDET_SHA256_PREFIX, MMDET_WEIGHTS, file_sha256
from pixeldit.infra.weights import WeightFile, resolve

NUM_CLASSES = 80
MAX_PER_IMAGE = 100
TEST_SCALE = (1333, 800)                       # mmdet Resize(scale=(1333, 800), keep_ratio=True)
PIXEL_MEAN = (123.675, 116.28, 103.53)         # RGB, 0-255
PIXEL_STD = (58.395, 57.12, 57.375)
PAD_DIVISOR = 32

MMDET_CONFIG = "mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py"


class CompiledOpsError(RuntimeError):
    """mmcv's compiled operators are missing or compute wrong numbers on the chosen device."""


class Detector(abc.ABC):
    """A GenEval object detector; `card` goes into the protocol and keys the detection cache."""
    backend: str

    def __init__(self, card: dict[str, Any]):
        self.card = {"backend": self.backend, **card}

    @staticmethod
    @abc.abstractmethod
    def weight_files() -> list[WeightFile]:
        """The registered files `from_registry` loads."""

    @abc.abstractmethod
    def detect(self, image: Image.Image) -> ImageDetections:
        """Instances found in one image (original resolution)."""

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.card, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- transformers backend

def resize_for_test(image: Image.Image, scale: tuple[int, int] = TEST_SCALE) -> tuple[torch.Tensor, tuple[int, int]]:
    """mmdet's test transform: keep-ratio resize into `scale` (1333x800; cv2 bilinear on float32),
    normalise, pad bottom/right to a multiple of 32 with zeros. Returns (1,3,H,W) and the unpadded size."""
    import cv2
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    new_w, new_h = int(width * factor + 0.5), int(height * factor + 0.5)
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    normalised = (resized - np.array(PIXEL_MEAN, np.float32)) / np.array(PIXEL_STD, np.float32)
    pad_h, pad_w = (-new_h) % PAD_DIVISOR, (-new_w) % PAD_DIVISOR
    padded = np.pad(normalised, ((0, pad_h), (0, pad_w), (0, 0)))
    return torch.from_numpy(padded).permute(2, 0, 1)[None].contiguous(), (new_h, new_w)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N,H,W) bool -> (N,4) xyxy: first/last covered column and row, right/bottom exclusive; 0 if empty."""
    columns, rows = masks.any(dim=1), masks.any(dim=2)
    width, height = masks.shape[2], masks.shape[1]
    col_index = torch.arange(width, device=masks.device)
    row_index = torch.arange(height, device=masks.device)
    x1 = torch.where(columns, col_index, width).amin(dim=1)
    x2 = torch.where(columns, col_index + 1, 0).amax(dim=1)
    y1 = torch.where(rows, row_index, height).amin(dim=1)
    y2 = torch.where(rows, row_index + 1, 0).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def instances_from_queries(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                           max_per_image: int = MAX_PER_IMAGE) -> ImageDetections:
    """Mask2Former instance post-processing (as mmdet's): every (query, class) pair is a candidate
    scored softmax(class) x mean sigmoid inside its binary mask; the best `max_per_image` are kept.

    class_logits: (Q, C+1) with the no-object class last; mask_logits: (Q, H, W) at image size.
    """
    num_classes = class_logits.shape[1] - 1
    class_scores = F.softmax(class_logits, dim=-1)[:, :-1].flatten()
    top_scores, top = class_scores.topk(min(max_per_image, class_scores.numel()))
    labels, queries = top % num_classes, top // num_classes
    logits = mask_logits[queries]
    binary = logits > 0
    mask_score = (logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return ImageDetections(boxes=boxes_from_masks(binary).cpu().numpy(),
                           scores=(top_scores * mask_score).cpu().numpy(),
                           labels=labels.cpu().numpy(), masks=binary.cpu().numpy())


class TransformersMask2Former(Detector):
    backend = "transformers"

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", card: dict[str, Any] | None = None,
                 test_scale: tuple[int, int] = TEST_SCALE):
        """`test_scale` other than 1333x800 changes the protocol; tests use it to keep tiny models fast."""
        num_labels = model.config.num_labels
        if num_labels != NUM_CLASSES:
            raise ValueError(f"the detector predicts {num_labels} classes; GenEval needs the {NUM_CLASSES} COCO things")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.test_scale = tuple(test_scale)
        super().__init__({**(card or {}), "test_scale": list(self.test_scale)})

    @staticmethod
    def weight_files() -> list[WeightFile]:
        return list(HF_FILES)

    @classmethod
    def from_registry(cls, device: str | torch.device = "cpu") -> "TransformersMask2Former":
        """The facebook Swin-S COCO instance model from the weights folder (fails fast when missing)."""
        from transformers import Mask2FormerForUniversalSegmentation
        config_path, weights_path = (resolve(entry.name) for entry in HF_FILES)
        model = Mask2FormerForUniversalSegmentation.from_pretrained(config_path.parent, local_files_only=True)
        card = {"config": HF_REPO, "config_sha256": file_sha256(config_path),
                "weights": weights_path.name, "weights_sha256": file_sha256(weights_path)}
        return cls(model, device, card)

    @torch.no_grad()
    def detect(self, image: Image.Image) -> ImageDetections:
        pixels, (height, width) = resize_for_test(image, self.test_scale)
        pixels = pixels.to(self.device)
        outputs = self.model(pixel_values=pixels)
        # Mask logits come at 1/4 of the padded input: upsample to it, drop the padding, then go
        # to the original size — bilinear, align_corners=False at both steps, as mmdet does.
        masks = F.interpolate(outputs.masks_queries_logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
        masks = F.interpolate(masks[:, :, :height, :width], size=(image.height, image.width),
                              mode="bilinear", align_corners=False)
        return instances_from_queries(outputs.class_queries_logits[0], masks[0])


# ---------------------------------------------------------------- mmdet backend

def mmdet_config_path() -> Path:
    import mmdet
    path = Path(mmdet.__file__).parent / ".mim" / "configs" / MMDET_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: install the mmdet==3.3.0 wheel (it ships its configs under .mim/)")
    return path


def _compiled_msda(device: torch.device):
    """The compiled multi-scale deformable attention mmcv runs on `device`, or None where mmcv
    itself falls back to its pure-PyTorch version (CPU)."""
    if device.type != "cuda":
        return None
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    return lambda *args: MultiScaleDeformableAttnFunction.apply(*args, 64)


def check_mmcv_ops(device: str | torch.device) -> None:
    """Refuse to run when mmcv's compiled ops cannot load, or deformable attention computes wrong
    numbers on `device` (ops built without this GPU's architecture, or without CUDA)."""
    device = torch.device(device)
    try:
        importlib.import_module("mmcv._ext")
        importlib.import_module("mmdet")
    except ImportError as error:
        raise CompiledOpsError(
            f"the mmdet detector's stack does not load ({error}). mmdet's Mask2Former needs mmdet and full mmcv "
            f"(not mmcv-lite), compiled from source (~6 min on 2 cores): `PIXELDIT_STACKS=geneval bash "
            f".ci/bootstrap.sh true` builds it into .venv (the test command builds it too); by hand, `pip install "
            f"'setuptools<81' && MAX_JOBS=2 pip install --no-build-isolation --no-cache-dir mmcv==2.1.0 mmdet==3.3.0`. "
            f"Or use `--detector transformers`.") from None
    compiled = _compiled_msda(device)
    if compiled is None:
        return
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[8, 8], [4, 4]])
    level_start = torch.tensor([0, 64])
    value = torch.randn(1, 80, 2, 8, generator=generator)
    locations = torch.rand(1, 5, 2, 2, 4, 2, generator=generator)
    weights = torch.rand(1, 5, 2, 2, 4, generator=generator).flatten(-2).softmax(-1).view(1, 5, 2, 2, 4)
    expected = multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)
    try:
        actual = compiled(*(t.to(device) for t in (value, shapes, level_start, locations, weights))).cpu()
        good = torch.allclose(actual, expected, atol=1e-4)
    except RuntimeError as error:
        good, actual = False, error
    if not good:
        raise CompiledOpsError(
            f"mmcv's multi-scale deformable attention is wrong on {device} ({str(actual)[:200]}); detections would be "
            f"silently wrong. Rebuild mmcv with this GPU's ops: `MMCV_WITH_OPS=1 FORCE_CUDA=1 "
            f"TORCH_CUDA_ARCH_LIST=<e.g. 9.0> pip install --no-build-isolation --no-cache-dir mmcv==2.1.0`, "
            f"or use `--detector transformers`.")


class MMDetMask2Former(Detector):
    backend = "mmdet"

    def __init__(self, model, device: str | torch.device, card: dict[str, Any]):
        self.model = model
        self.device = torch.device(device)
        super().__init__(card)

    @classmethod
    def from_config(cls, checkpoint: Path | None, device: str | torch.device = "cpu",
                    test_scale: tuple[int, int] = TEST_SCALE) -> "MMDetMask2Former":
        """GenEval's mmdet config with `checkpoint` (None: random init, for tests). A `test_scale`
        other than 1333x800 changes the protocol; tests use it to keep CPU runs short."""
        check_mmcv_ops(device)
        from mmdet.apis import init_detector
        from mmengine.config import Config
        config = Config.fromfile(str(mmdet_config_path()))
        config.model.backbone.init_cfg = None          # no download of ImageNet Swin weights
        resize = [step for step in config.test_dataloader.dataset.pipeline if step.type == "Resize"]
        if len(resize) != 1 or not resize[0].keep_ratio:
            raise ValueError(f"{MMDET_CONFIG}: expected one keep-ratio Resize in the test pipeline, got {resize}")
        resize[0].scale = tuple(test_scale)
        model = init_detector(config, None, device=str(device))
        card = {"config": MMDET_CONFIG, "config_sha256": hashlib.sha256(config.pretty_text.encode()).hexdigest(),
                "test_scale": list(test_scale), "weights": None, "weights_sha256": None}
        if checkpoint is not None:
            # A plain state dict: torch.load(weights_only=True) refuses anything that would run code.
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state))
            card.update(weights=Path(checkpoint).name, weights_sha256=file_sha256(Path(checkpoint)))
        return cls(model.eval(), device, card)

    @staticmethod
    def weight_files() -> list[WeightFile]:
        return [MMDET_WEIGHTS]

    @classmethod
    def from_registry(cls, device: str | torch.device = "cpu") -> "MMDetMask2Former":
        path = resolve(MMDET_WEIGHTS.name)
        if not file_sha256(path).startswith(MMDET_SHA256_PREFIX):
            raise ValueError(f"{path} is not the mmdet checkpoint GenEval uses (sha256 does not start with "
                             f"{MMDET_SHA256_PREFIX}); delete it and run `pixeldit-bench weights fetch {MMDET_WEIGHTS.name}`")
        return cls.from_config(path, device)

    @torch.no_grad()
    def detect(self, image: Image.Image) -> ImageDetections:
        from mmdet.apis import inference_detector
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # mmdet reads images as BGR
        found = inference_detector(self.model, bgr).pred_instances
        return ImageDetections(boxes=found.bboxes.cpu().numpy(), scores=found.scores.cpu().numpy(),
                               labels=found.labels.cpu().numpy(), masks=found.masks.cpu().numpy().astype(bool))


BACKENDS = {"mmdet": MMDetMask2Former, "transformers": TransformersMask2Former}


def backend_weights(backend: str) -> list[str]:
    """Registry names of the files a backend loads."""
    return [entry.name for entry in _backend(backend).weight_files()]


def _backend(backend: str) -> type[Detector]:
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown detector backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None


def build_detector(backend: str, device: str | torch.device = "cpu") -> Detector:
    """The GenEval detector of `backend` with its registered weights (MissingWeightsError names the fetch)."""
    return _backend(backend).from_registry(device)

