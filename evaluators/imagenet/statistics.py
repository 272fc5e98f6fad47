"""Streaming feature statistics: count, Σx and Σxxᵀ in float64, merged by adding them (EDM2's scheme).

Features arrive batch by batch, so 50,000 images never sit in memory for the Fréchet distance. Two
accumulators of disjoint parts add up to the accumulator of the whole, and the whole state is one flat
float64 tensor, so under torchrun `torch.distributed.all_reduce(state, SUM)` is the merge across ranks.

mu = Σx / n and sigma = (Σxxᵀ - n mu muᵀ) / (n - 1): the unbiased covariance (ddof = 1) of `np.cov`, which
ADM's `compute_statistics` and `metrics.fid_statistics` use. The subtraction loses about log10(|mu|² / var)
digits of float64 to cancellation, far below what a Fréchet distance resolves.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from evaluators.imagenet.errors import ImageNetEvalError


class FeatureStatistics:
    """Accumulates count, Σx and Σxxᵀ of d-dimensional features in one flat float64 tensor `state`."""

    def __init__(self, dim: int, device: str | torch.device = "cpu", state: torch.Tensor | None = None):
        self.dim = dim
        if state is None:
            state = torch.zeros(1 + dim + dim * dim, dtype=torch.float64, device=device)
        if state.dtype != torch.float64 or state.shape != (1 + dim + dim * dim,):
            raise ImageNetEvalError(f"a state of {dim}-d statistics is {1 + dim + dim * dim} float64 values, "
                                    f"got {tuple(state.shape)} {state.dtype}")
        self.state = state                                          # [n, Σx (d), Σxxᵀ (d·d, row-major)]
        self._sum = state[1:1 + dim]                                # (d,) view
        self._outer = state[1 + dim:].view(dim, dim)                # (d, d) view

    @classmethod
    def from_state(cls, state: torch.Tensor) -> FeatureStatistics:
        """The accumulator whose state is `state` (e.g. received or all-reduced); d from 1 + d + d² = len."""
        dim = (math.isqrt(4 * len(state) - 3) - 1) // 2
        return cls(dim, state=state)

    @property
    def count(self) -> int:
        return int(self.state[0])

    def update(self, features) -> FeatureStatistics:
        """Add a batch of features, (n, d) numpy or torch of any float dtype."""
        x = torch.as_tensor(features).to(self.state.device, torch.float64)          # (n, d)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ImageNetEvalError(f"expected a batch of {self.dim}-d features, got shape {tuple(x.shape)}")
        self.state[0] += len(x)
        self._sum += x.sum(0)                                                       # (d,)
        self._outer += x.T @ x                                                      # (d, d)
        return self

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Add another accumulator's sums (the statistics of the union of both parts)."""
        if other.dim != self.dim:
            raise ImageNetEvalError(f"cannot merge {other.dim}-d statistics into {self.dim}-d ones")
        self.state += other.state.to(self.state.device)
        return self

    def all_reduce(self, group=None) -> FeatureStatistics:
        """Sum the state over the ranks of `group` (the default process group if None), in place."""
        dist.all_reduce(self.state, op=dist.ReduceOp.SUM, group=group)
        return self

    def mu(self) -> np.ndarray:
        """(d,) float64 mean."""
        if self.count < 1:
            raise ImageNetEvalError("a mean needs at least 1 image, got 0")
        return (self._sum / self.count).cpu().numpy()

    def sigma(self) -> np.ndarray:
        """(d, d) float64 covariance with ddof = 1, as np.cov(features, rowvar=False)."""
        count = self.count
        if count < 2:
            raise ImageNetEvalError(f"a covariance needs at least 2 images, got {count}")
        mu = self._sum / count                                                      # (d,)
        return ((self._outer - count * torch.outer(mu, mu)) / (count - 1)).cpu().numpy()
