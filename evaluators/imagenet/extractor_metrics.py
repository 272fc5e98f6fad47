"""Metrics over any extractor's features, beyond ADM's suite: precision/recall/density/coverage, CMMD and FD∞.

Written from the behaviour of the reference code, each on (n, d) numpy or torch features:

* precision, recall, density, coverage (Naeem et al. 2020): the `prdc` package's `compute_prdc` with k = 5,
  as dgm-eval reports them for any encoder. Euclidean k-NN radii of the reference ("real") points and of the
  samples, self included as the 0th neighbour; precision = fraction of samples inside some reference ball;
  recall = fraction of reference points inside some sample ball; density = mean over samples of the number
  of reference balls holding the sample, / k; coverage = fraction of reference points whose ball holds some
  sample; all with strict `<`. Computed here in float64 on squared distances (prdc compares Euclidean ones;
  with float32 input it also rounds them to float32). ADM's precision/recall of the Inception suite differ
  (k = 3, `<=`, float16 distances): metrics.precision_recall;
* CMMD (Jayasumana et al. 2024, google-research `cmmd/distance.py`): the biased (minimum-variance)
  MMD² with a Gaussian RBF kernel exp(-|x - y|² / (2 σ²)), σ = 10, × 1000, on L2-normalised embeddings
  (normalised here, as cmmd's CLIP embedding model returns them); float64 where cmmd runs JAX float32;
* FD∞ (Chong & Forsyth, CVPR 2020, mchong6/FID_IS_infinity `calculate_FID_infinity_path`): FD of the
  first N rows after shuffling all sample features, for 15 N evenly spaced from 5,000 to the count
  (`np.linspace(...).astype(int32)`), a least-squares line in 1/N, its value at 1/N = 0. The reference
  shuffles with numpy's unseeded global generator before each N (so each N draws without replacement);
  here a seeded `np.random.default_rng(seed)` shuffles a row order the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.metrics import (
    DEFAULT_FRECHET_ROUTE,
    PR_BLOCK,
    fid_statistics,
    frechet_distance,
    manifold_radii,
    pairwise_sq_distances,
)

DC_K = 5
CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
FD_INFINITY_MIN_COUNT = 5000
FD_INFINITY_POINTS = 15


def _float64(features, device) -> torch.Tensor:
    return torch.from_numpy(np.array(features, dtype=np.float64)).to(device)       # a copy: cached features are read-only


def _sq_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return pairwise_sq_distances(u, v, fp16=False)


# --------------------------------------------------------------------------------------------- precision / recall / density / coverage

def prdc(reference, samples, *, k: int = DC_K, block: int = PR_BLOCK, device: str | torch.device = "cpu") -> dict:
    """Precision, recall, density and coverage of `samples` against `reference` as prdc's
    `compute_prdc(reference, samples, nearest_k=k)`."""
    for name, features in (("reference", reference), ("sample", samples)):
        if len(features) < k + 1:
            raise ImageNetEvalError(f"precision/recall/density/coverage need at least {k + 1} {name} images "
                                    f"(k={k}), got {len(features)}")
    ref, smp = _float64(reference, device), _float64(samples, device)              # (R, d), (S, d)
    radii_ref = manifold_radii(ref, _sq_distances, k, block, block)                 # (R,) squared k-NN radii
    radii_smp = manifold_radii(smp, _sq_distances, k, block, block)                 # (S,)
    balls_holding = torch.zeros(len(smp), dtype=torch.float64, device=device)       # (S,)
    covered = torch.zeros(len(ref), dtype=torch.bool, device=device)                # (R,)
    recalled = torch.zeros(len(ref), dtype=torch.bool, device=device)               # (R,)
    for begin1 in range(0, len(ref), block):
        for begin2 in range(0, len(smp), block):
            distances = _sq_distances(ref[begin1:begin1 + block], smp[begin2:begin2 + block])   # (r, s)
            inside_ref = distances < radii_ref[begin1:begin1 + block, None]                      # (r, s)
            balls_holding[begin2:begin2 + block] += inside_ref.sum(0)
            covered[begin1:begin1 + block] |= inside_ref.any(1)
            recalled[begin1:begin1 + block] |= (distances < radii_smp[None, begin2:begin2 + block]).any(1)
    return {"precision": float((balls_holding > 0).double().mean()), "recall": float(recalled.double().mean()),
            "density": float(balls_holding.mean()) / k, "coverage": float(covered.double().mean()), "k": k}


# --------------------------------------------------------------------------------------------- CMMD

def _mean_rbf(x: torch.Tensor, y: torch.Tensor, sigma: float, block: int) -> float:
    """Mean of exp(-|x_i - y_j|² / (2 σ²)) over all pairs, diagonal included when x is y."""
    total = 0.0
    for begin1 in range(0, len(x), block):
        for begin2 in range(0, len(y), block):
            block_sq = _sq_distances(x[begin1:begin1 + block], y[begin2:begin2 + block])   # (bx, by)
            total += float(torch.exp(-block_sq / (2 * sigma ** 2)).sum())
    return total / (len(x) * len(y))


def cmmd(reference, samples, *, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE, block: int = PR_BLOCK,
         device: str | torch.device = "cpu") -> float:
    """CMMD: scale × biased MMD² (RBF kernel of bandwidth sigma) between the L2-normalised rows of both sets."""
    if len(reference) < 1 or len(samples) < 1:
        raise ImageNetEvalError(f"CMMD needs at least 1 image per set, got {len(reference)} and {len(samples)}")
    x = torch.nn.functional.normalize(_float64(reference, device), dim=1)          # (n, d) unit rows
    y = torch.nn.functional.normalize(_float64(samples, device), dim=1)            # (m, d) unit rows
    return scale * (_mean_rbf(x, x, sigma, block) + _mean_rbf(y, y, sigma, block) - 2 * _mean_rbf(x, y, sigma, block))


# --------------------------------------------------------------------------------------------- FD∞

def fd_infinity(samples, mu_reference: np.ndarray, sigma_reference: np.ndarray, *, seed: int = 0,
                min_count: int = FD_INFINITY_MIN_COUNT, points: int = FD_INFINITY_POINTS,
                route: str = DEFAULT_FRECHET_ROUTE) -> dict:
    """FD∞ of `samples` against reference statistics: FD_N at `points` counts N from `min_count` to all
    samples, each N on the first N rows of a fresh seeded shuffle, extrapolated linearly in 1/N to N = ∞."""
    samples = np.asarray(samples)                                                   # (n, d); a memmap stays one
    count = len(samples)
    if count <= min_count:
        raise ImageNetEvalError(f"FD∞ extrapolates from FD at {min_count} images up to the sample count, "
                                f"so it needs more than {min_count} samples, got {count}")
    counts = np.linspace(min_count, count, points).astype(np.int32)
    order = np.arange(count)
    rng = np.random.default_rng(seed)
    distances = []
    for n in counts:
        rng.shuffle(order)
        mu, sigma = fid_statistics(samples[np.sort(order[:n])])    # sorted rows: one pass over a memmap
        distances.append(frechet_distance(mu, sigma, mu_reference, sigma_reference, route=route))
    slope, intercept = np.polyfit(1.0 / counts, distances, 1)
    return {"fd_infinity": float(intercept), "slope": float(slope), "counts": counts.tolist(), "fd": distances,
            "seed": seed, "subsampling": "first N of a seeded shuffle (without replacement), fresh for each N"}
