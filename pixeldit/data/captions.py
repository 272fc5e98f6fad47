"""Captions for class-labelled datasets, and their text-encoder embeddings cached once per run.

digits32 has no captions, so each label gets a few templates ("a handwritten digit seven", ...); training
picks one per image and step. Embedding them once (K captions, not one per image or step) keeps the frozen
encoder out of the training loop: the cache holds every caption's tokens, the null ("") embedding that text
dropout and classifier-free guidance use, and which encoder made them.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pixeldit.infra.files import atomic_path
from pixeldit.text_encoders import get_text_encoder

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = ("a handwritten digit {name}",
                   "the number {name}, written by hand",
                   "a scan of a handwritten {digit}",
                   "a blurry grey digit {name} on a black background")
CAPTION_SETS = {"digits": (DIGIT_NAMES, DIGIT_TEMPLATES)}


def class_captions(caption_set: str) -> list[list[str]]:
    """captions[label] = that class's captions (the first is the evaluation prompt)."""
    try:
        names, templates = CAPTION_SETS[caption_set]
    except KeyError:
        raise KeyError(f"unknown caption set {caption_set!r}; known: {', '.join(CAPTION_SETS)}") from None
    return [[template.format(name=name, digit=label) for template in templates] for label, name in enumerate(names)]


def class_prompt(caption_set: str, label: int) -> str:
    """The prompt that asks for class `label` at evaluation (its first caption)."""
    return class_captions(caption_set)[label][0]


@dataclasses.dataclass(frozen=True)
class CaptionEmbeddings:
    """tokens (num_classes, K, T, d) float32 and mask (num_classes, K, T) of every caption, and the null
    embedding (1, T, d) / (1, T); `encoder` names the text encoder, e.g. "all-minilm-l6-v2"."""

    tokens: torch.Tensor
    mask: torch.Tensor
    null_tokens: torch.Tensor
    null_mask: torch.Tensor
    encoder: str
    caption_set: str

    def pick(self, labels: torch.Tensor, choice: torch.Tensor, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, T, d), mask (B, T)) of caption `choice` of each label, the null embedding where `drop`."""
        tokens = self.tokens[labels, choice]                                   # (B, T, d)
        mask = self.mask[labels, choice]                                       # (B, T)
        keep = ~drop.view(-1, 1)
        return (torch.where(keep[..., None], tokens, self.null_tokens.to(tokens.device)),
                torch.where(keep, mask, self.null_mask.to(mask.device)))

    def to(self, device: torch.device) -> CaptionEmbeddings:
        return dataclasses.replace(self, tokens=self.tokens.to(device), mask=self.mask.to(device),
                                   null_tokens=self.null_tokens.to(device), null_mask=self.null_mask.to(device))


def embed_captions(caption_set: str, encoder_name: str, max_length: int) -> CaptionEmbeddings:
    """Run the text encoder once over every caption of the set and over the null prompt "", padded to max_length
    tokens (the model's text_max_length, as generation pads them)."""
    encoder = get_text_encoder(encoder_name, max_length=max_length)
    captions = class_captions(caption_set)
    tokens, mask = encoder.encode([caption for row in captions for caption in row])   # (C*K, T, d), (C*K, T)
    null_tokens, null_mask = encoder.encode_negative([""])                            # (1, T, d), (1, T)
    classes, per_class = len(captions), len(captions[0])
    return CaptionEmbeddings(tokens.view(classes, per_class, *tokens.shape[1:]), mask.view(classes, per_class, -1),
                             null_tokens, null_mask, encoder_name, caption_set)


def save_caption_embeddings(path: str | os.PathLike, embeddings: CaptionEmbeddings) -> None:
    tensors = {name: getattr(embeddings, name).contiguous() for name in ("tokens", "mask", "null_tokens", "null_mask")}
    with atomic_path(path) as temp:
        save_file(tensors, temp, metadata={"encoder": embeddings.encoder, "caption_set": embeddings.caption_set})


def load_caption_embeddings(path: str | os.PathLike) -> CaptionEmbeddings:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return CaptionEmbeddings(**load_file(str(path)), encoder=metadata["encoder"], caption_set=metadata["caption_set"])


def cached_caption_embeddings(path: str | os.PathLike, caption_set: str, encoder_name: str,
                              max_length: int) -> CaptionEmbeddings:
    """The cache at `path`, made on first use; a cache of another encoder, caption set or length is refused."""
    path = Path(path)
    if not path.is_file():
        save_caption_embeddings(path, embed_captions(caption_set, encoder_name, max_length))
    embeddings = load_caption_embeddings(path)
    found = (embeddings.encoder, embeddings.caption_set, embeddings.tokens.shape[2])
    if found != (encoder_name, caption_set, max_length):
        raise ValueError(f"{path} holds {found[1]!r} captions embedded by {found[0]!r} to {found[2]} tokens, not "
                         f"{caption_set!r} by {encoder_name!r} to {max_length}; delete it or use another run directory")
    return embeddings
