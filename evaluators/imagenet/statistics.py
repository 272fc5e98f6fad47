"""Streaming feature statistics: count, Σx and Σxxᵀ in float64, merged by adding them (EDM2's scheme).

Features arrive batch by batch, so 50,000 images never sit in memory for the Fréchet distance. Two
accumulators of disjoint parts add up to the accumulator of the whole, so under torchrun every rank sums its
share and the ranks' sums are added.

Each sum is kept as a float64 pair (hi, lo) with hi + lo the running total to about 106 bits (Knuth's
TwoSum: the rounding error of every addition is carried in lo). Each batch's own sums are float64 products
of its rows, the same numbers in one process and under torchrun (shares are whole batches); the pairs then
make the total independent of how the batches were grouped, so the statistics of one process and of N ranks
are the same float64 values. (Only a total within ~1e-30 relative of a float64 rounding boundary could still
round differently; plain float64 sums differ in the last bits for any regrouping.) This is why the ranks'
pairs are gathered and added in rank order instead of `all_reduce(SUM)`, which would round hi + hi.

mu = Σx / n and sigma = (Σxxᵀ - n mu muᵀ) / (n - 1): the unbiased covariance (ddof = 1) of `np.cov`, which
ADM's `compute_statistics` and `metrics.fid_statistics` use. The subtraction loses about log10(|mu|² / var)
digits of float64 to cancellation, far below what a Fréchet distance resolves.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from evaluators.imagenet.errors import ImageNetEvalError

CHUNK = 1 << 20            # values per compensated addition step: bounds its temporaries to a few MiB


def _add_compensated(hi: torch.Tensor, lo: torch.Tensor, values: torch.Tensor, carried: torch.Tensor | None) -> None:
    """hi + lo += values (+ carried) in place, chunk by chunk: Knuth's TwoSum s = fl(hi + v), e = exact rounding
    error (s + e = hi + v), hi = s, lo += e (+ carried)."""
    for begin in range(0, len(values), CHUNK):
        part = slice(begin, begin + CHUNK)
        a, b = hi[part], values[part]
        total = a + b
        b_virtual = total - a
        error = a - (total - b_virtual)
        error += b - b_virtual
        if carried is not None:
            error += carried[part]
        lo[part] += error
        a.copy_(total)


def state_length(dim: int) -> int:
    return 1 + dim + dim * dim


class FeatureStatistics:
    """Accumulates count, Σx and Σxxᵀ of d-dimensional features as compensated float64 sums.

    `state` is (2, 1 + d + d²) float64: row 0 the sums [n, Σx (d), Σxxᵀ (d·d, row-major)], row 1 the rounding
    error each sum carries."""

    def __init__(self, dim: int, device: str | torch.device = "cpu", state: torch.Tensor | None = None):
        self.dim = dim
        length = state_length(dim)
        if state is None:
            state = torch.zeros(2, length, dtype=torch.float64, device=device)
        if state.dtype != torch.float64 or state.shape != (2, length):
            raise ImageNetEvalError(f"a state of {dim}-d statistics is 2 x {length} float64 values, "
                                    f"got {tuple(state.shape)} {state.dtype}")
        self.state = state

    @classmethod
    def from_state(cls, state: torch.Tensor) -> FeatureStatistics:
        """The accumulator whose state is `state` (e.g. received from another rank); d from 1 + d + d² = len."""
        dim = (math.isqrt(4 * state.shape[-1] - 3) - 1) // 2
        return cls(dim, state=state)

    @property
    def count(self) -> int:
        return int(self.state[0, 0] + self.state[1, 0])

    def _add(self, hi: torch.Tensor, lo: torch.Tensor | None = None, at: int = 0) -> None:
        """Add float64 values `hi` (with their own carried errors `lo`) to the sums from position `at` on."""
        span = slice(at, at + len(hi))
        _add_compensated(self.state[0, span], self.state[1, span], hi, lo)

    def update(self, features) -> FeatureStatistics:
        """Add a batch of features, (n, d) numpy or torch of any float dtype."""
        x = torch.as_tensor(features).to(self.state.device, torch.float64)          # (n, d)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ImageNetEvalError(f"expected a batch of {self.dim}-d features, got shape {tuple(x.shape)}")
        self._add(torch.full((1,), float(len(x)), dtype=torch.float64, device=x.device))
        self._add(x.sum(0), at=1)                                                    # (d,)
        self._add((x.T @ x).flatten(), at=1 + self.dim)                              # (d²,)
        return self

    def gather_merge(self, group=None) -> FeatureStatistics:
        """Replace this rank's sums by the sums of every rank of `group` (the default group if None), added in
        rank order, the same on every rank. The states travel by all_gather: world x 2 x (1 + d + d²) float64."""
        parts = [torch.empty_like(self.state) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, self.state.contiguous(), group=group)
        self.state.zero_()
        for part in parts:
            self._add(part[0], part[1])
        return self

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Add another accumulator's sums (the statistics of the union of both parts)."""
        if other.dim != self.dim:
            raise ImageNetEvalError(f"cannot merge {other.dim}-d statistics into {self.dim}-d ones")
        other_state = other.state.to(self.state.device)
        self._add(other_state[0], other_state[1])
        return self

    def totals(self, part: slice = slice(None)) -> torch.Tensor:
        """The sums rounded once, (1 + d + d²,) float64, or the `part` of them."""
        return self.state[0, part] + self.state[1, part]

    def mu(self) -> np.ndarray:
        """(d,) float64 mean."""
        count = self.count
        if count < 1:
            raise ImageNetEvalError("a mean needs at least 1 image, got 0")
        return (self.totals(slice(1, 1 + self.dim)) / count).cpu().numpy()

    def sigma(self) -> np.ndarray:
        """(d, d) float64 covariance with ddof = 1, as np.cov(features, rowvar=False)."""
        count = self.count
        if count < 2:
            raise ImageNetEvalError(f"a covariance needs at least 2 images, got {count}")
        mu = self.totals(slice(1, 1 + self.dim)) / count                              # (d,)
        sigma = self.totals(slice(1 + self.dim, None)).view(self.dim, self.dim)      # (d, d) Σxxᵀ, a new tensor
        sigma.addr_(mu, mu, alpha=-count).div_(count - 1)                            # in place: one d×d buffer
        return sigma.cpu().numpy()

    def save(self, path: Path) -> None:
        """The rounded sums as a (1 + d + d²,) float64 .npy (what mu and sigma are computed from)."""
        np.save(path, self.totals().cpu().numpy())

    @classmethod
    def load(cls, path: Path, dim: int) -> FeatureStatistics:
        totals = torch.from_numpy(np.load(path))
        if totals.dtype != torch.float64 or totals.shape != (state_length(dim),):
            raise ImageNetEvalError(f"{path} holds {tuple(totals.shape)} {totals.dtype}, not the "
                                    f"{state_length(dim)} float64 sums of {dim}-d statistics")
        return cls(dim, state=torch.stack([totals, torch.zeros_like(totals)]))
