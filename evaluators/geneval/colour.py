"""GenEval's colour classifier: CLIP ViT-L/14 (OpenAI weights) zero-shot over ten colours.

As in the reference (`color_classification` + `ImageCrops` in evaluate_images.py, with
clip_benchmark's `zero_shot_classifier`): each object is cut out through its instance mask onto a
#999 grey canvas, cropped to its box, preprocessed by CLIP's eval transform, and compared with one
text embedding per colour = normalised mean of the normalised embeddings of three templates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from evaluators.geneval.rules import COLORS, Detection
from evaluators.geneval.weights import CLIP_WEIGHTS, file_sha256
from pixeldit.infra.weights import resolve

# OpenAI's weights were trained with QuickGELU; open_clip only switches it on by itself for the
# "openai" tag, so a local file needs the -quickgelu config.
CLIP_MODEL = "ViT-L-14-quickgelu"
TEMPLATES = ("a photo of a {c} {obj}", "a photo of a {c}-colored {obj}", "a photo of a {c} object")
BACKGROUND = "#999"
BATCH_SIZE = 16


def masked_crop(image: Image.Image, detection: Detection, background: str = BACKGROUND) -> Image.Image:
    """The object through its mask on a flat background, cropped to its box (PIL rounds the box)."""
    image = image.convert("RGB")
    if detection.mask is not None:
        if detection.mask.shape != (image.height, image.width):
            raise ValueError(f"mask {detection.mask.shape} does not match image {image.height}x{image.width}")
        canvas = Image.new("RGB", image.size, color=background)
        image = Image.composite(image, canvas, Image.fromarray(np.asarray(detection.mask, dtype=bool)))
    return image.crop(tuple(float(v) for v in detection.box[:4]))


class ClipColourClassifier:
    """Zero-shot colour of detected objects; per-class text classifiers are built once and cached."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, device: str | torch.device = "cpu",
                 card: dict[str, Any] | None = None):
        self.model = model.to(device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.card = dict(card or {})
        self._text_classifiers: dict[str, torch.Tensor] = {}

    @classmethod
    def from_registry(cls, device: str | torch.device = "cpu") -> "ClipColourClassifier":
        """The GenEval classifier with the registered OpenAI weights (fails fast when they are missing)."""
        return cls.from_openai_file(resolve(CLIP_WEIGHTS.name), CLIP_MODEL, device)

    @classmethod
    def from_openai_file(cls, path: Path, model_name: str = CLIP_MODEL,
                         device: str | torch.device = "cpu") -> "ClipColourClassifier":
        """An open_clip `model_name` filled from an OpenAI-format TorchScript archive."""
        import open_clip
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
        # torch.load(weights_only=True) refuses TorchScript archives; TorchScript loading runs no
        # arbitrary Python, and the file's sha256 goes into the protocol card.
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
        recomputed = {name for name, _ in model.named_buffers()} - set(model.state_dict())   # e.g. attn_mask
        for key in ("input_resolution", "context_length", "vocab_size", *recomputed):      # not weights
            state.pop(key, None)
        model.load_state_dict(state)
        card = {"model": model_name, "weights": Path(path).name, "weights_sha256": file_sha256(path)}
        return cls(model, preprocess, open_clip.get_tokenizer(model_name), device, card)

    def protocol(self) -> dict[str, Any]:
        return {**self.card, "templates": list(TEMPLATES), "colors": list(COLORS), "background": BACKGROUND}

    @torch.no_grad()
    def text_classifier(self, classname: str) -> torch.Tensor:
        """(embed_dim, 10): per colour, the normalised mean of the normalised template embeddings."""
        if classname not in self._text_classifiers:
            columns = []
            for colour in COLORS:
                prompts = [template.format(c=colour, obj=classname) for template in TEMPLATES]
                embeddings = self.model.encode_text(self.tokenizer(prompts).to(self.device))
                mean = F.normalize(embeddings, dim=-1).mean(dim=0)
                columns.append(mean / mean.norm())
            self._text_classifiers[classname] = torch.stack(columns, dim=1)
        return self._text_classifiers[classname]

    @torch.no_grad()
    def classify(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]:
        """One colour name per object."""
        classifier = self.text_classifier(classname)
        crops = [self.preprocess(masked_crop(image, obj)) for obj in objects]
        colours = []
        for start in range(0, len(crops), BATCH_SIZE):
            batch = torch.stack(crops[start:start + BATCH_SIZE]).to(self.device)
            features = F.normalize(self.model.encode_image(batch), dim=-1)
            # The reference scales logits by 100 before argmax; the scale cannot change the argmax.
            colours += [COLORS[i] for i in (features @ classifier).argmax(dim=1).tolist()]
        return colours
