"""What a sampler conditions on: class labels or text, with the unconditional counterpart CFG needs.

A condition knows three things, so the samplers never branch on its kind:
- `model_args()`: the arguments after (x, t) of a velocity model, `model(x, t, *args)`;
- `unconditional()`: the same batch with the null condition (the null class id, or the "" / negative-prompt
  embedding, which a text model was trained on through text dropout);
- `cat(other)`: the batch [self; other] for one doubled forward pass ([uncond; cond] under guidance).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import torch


class Condition(Protocol):
    def model_args(self) -> tuple[torch.Tensor, ...]: ...

    def unconditional(self) -> "Condition": ...

    def cat(self, other: "Condition") -> "Condition": ...


@dataclasses.dataclass(frozen=True)
class ClassLabels:
    """Class ids (B,) int64; the unconditional branch uses `null_label` (num_classes for PixelDiT)."""

    labels: torch.Tensor
    null_label: int

    def model_args(self) -> tuple[torch.Tensor]:
        return (self.labels,)

    def unconditional(self) -> ClassLabels:
        return ClassLabels(torch.full_like(self.labels, self.null_label), self.null_label)

    def cat(self, other: ClassLabels) -> ClassLabels:
        return ClassLabels(torch.cat([self.labels, other.labels]), self.null_label)


@dataclasses.dataclass(frozen=True)
class TextCondition:
    """Text-encoder tokens (B, T, d) float32 with mask (B, T) (1 = real token), and the null embedding
    (1, T, d) / (1, T) that the unconditional branch repeats over the batch."""

    tokens: torch.Tensor
    mask: torch.Tensor
    null_tokens: torch.Tensor
    null_mask: torch.Tensor

    def __post_init__(self):
        if self.tokens.ndim != 3 or self.mask.shape != self.tokens.shape[:2]:
            raise ValueError(f"text tokens must be (B, T, d) with a (B, T) mask, got {tuple(self.tokens.shape)} "
                             f"and {tuple(self.mask.shape)}")
        if self.null_tokens.shape != (1, *self.tokens.shape[1:]) or self.null_mask.shape != (1, self.tokens.shape[1]):
            raise ValueError(f"the null text embedding must be (1, {self.tokens.shape[1]}, {self.tokens.shape[2]}) with a "
                             f"(1, {self.tokens.shape[1]}) mask, got {tuple(self.null_tokens.shape)}; encode it with "
                             f"the same encoder and max_length as the prompts")

    def model_args(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens, self.mask

    def unconditional(self) -> TextCondition:
        batch = self.tokens.shape[0]
        return dataclasses.replace(self, tokens=self.null_tokens.expand(batch, -1, -1),
                                   mask=self.null_mask.expand(batch, -1))

    def cat(self, other: TextCondition) -> TextCondition:
        return dataclasses.replace(self, tokens=torch.cat([self.tokens, other.tokens]),
                                   mask=torch.cat([self.mask, other.mask]))

    def select(self, rows: torch.Tensor | list[int]) -> TextCondition:
        """The condition of a subset of rows (prompts encoded once, used by several samples)."""
        return dataclasses.replace(self, tokens=self.tokens[rows], mask=self.mask[rows])
