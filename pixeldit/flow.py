"""Rectified flow as PixelDiT trains it (upstream c2i/src/diffusion.py, REPATrainer + LinearScheduler).

Time runs from noise (t = 0) to data (t = 1):  x_t = t·x + (1 − t)·ε,  target velocity v = x − ε.
Training times are logit-normal, t = sigmoid(N(mean, std)), then shifted t ← t / (t + (1 − t)·s)
(s = 1 at 256², 3 at 512²: s > 1 moves t toward noise). The loss is plain MSE over all elements.
`prediction="x"` is the JiT-style alternative: the network predicts the clean image and the loss is taken
on the velocity it implies, v̂ = (x̂ − x_t) / (1 − t).
"""
from __future__ import annotations

import torch
import torch.nn as nn

PREDICTIONS = ("v", "x")
X_PREDICTION_T_MAX = 0.95   # JiT clips 1 - t away from 0 when turning an x-prediction into a velocity


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Warp t in [0, 1] by t / (t + (1 - t)·shift); shift 1 is the identity."""
    return t / (t + (1 - t) * shift)


def sample_timesteps(n: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0,
                     shift: float = 1.0) -> torch.Tensor:
    """n logit-normal training times (float32, CPU, from `generator`), shifted."""
    t = (torch.randn(n, generator=generator) * std + mean).sigmoid()
    return time_shift(t, shift)


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, v): the noisy image at time t and the target velocity."""
    t = t.view(-1, *([1] * (x.ndim - 1)))
    return t * x + (1 - t) * noise, x - noise


def drop_labels(y: torch.Tensor, drop: torch.Tensor, null_class: int) -> torch.Tensor:
    """Replace the labels where `drop` is True with the null class (classifier-free guidance training)."""
    return torch.where(drop, torch.full_like(y, null_class), y)


def velocity_from_output(output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
    """The network's velocity estimate for either parameterisation."""
    if prediction == "v":
        return output
    if prediction == "x":
        one_minus_t = (1 - t.clamp(max=X_PREDICTION_T_MAX)).view(-1, *([1] * (x_t.ndim - 1)))
        return (output - x_t) / one_minus_t
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


class VelocityFromPrediction(nn.Module):
    """Wraps an x-predicting network so samplers always see model(x, t, y) -> velocity."""

    def __init__(self, net: nn.Module, prediction: str):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.net = net
        self.prediction = prediction

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)   # num_classes, patch_size, config ...

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return velocity_from_output(self.net(x, t, y), x, t.reshape(-1).expand(x.shape[0]), self.prediction)
