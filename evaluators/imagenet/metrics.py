"""FID, sFID, IS, improved precision/recall and KID from features, with ADM's exact semantics.

Written from the behaviour of `openai/guided-diffusion: evaluations/evaluator.py`:

* statistics: `mu = mean(axis=0)` (in the features' float32, as ADM), `sigma = np.cov(rowvar=False)` (float64);
* Fréchet distance: `scipy.linalg.sqrtm(sigma1 @ sigma2)`; non-finite -> add 1e-6·I to both and retry;
  complex with a diagonal imaginary part above 1e-3 -> error, else the real part (route "sqrtm"). Route
  "eigh" gives the same trace from two symmetric eigendecompositions in float64 (see `trace_sqrt_product`),
  route "gram" (the default) from an n×n one when the n sample features are fewer than their dimensions
  (see `frechet_distance_of_features`);
* IS: float32 softmax of pool3 @ W (no bias), in-order splits of 5,000 at every count (the last one partial),
  mean of the per-split scores; the harness's earlier 10 splits below 50,000 remain a named rule;
* precision/recall: k = 3, squared distances to the 4th smallest distance in the row (self included),
  10,000×10,000 blocks, each block's distances in float16 first and recomputed in float32 only when
  the float16 block has a non-finite value (ADM's `tf.cond`);
* KID: torch-fidelity's own `kid_features_to_metric` (100 subsets, poly kernel degree 3, seeded RNG).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import linalg

from evaluators.imagenet.errors import ImageNetEvalError

ADM_IS_SPLIT_SIZE = 5000
ADM_IS_FULL_COUNT = 50000
ADM_SOFTMAX_BATCH = 512
PR_K = 3
PR_BLOCK = 10000
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020          # torch-fidelity's default rng_seed


# --------------------------------------------------------------------------------------------- FID / sFID

def fid_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) as ADM's `compute_statistics`: mean in the input dtype, covariance with ddof=1."""
    if len(features) < 2:
        raise ImageNetEvalError(f"a covariance needs at least 2 images, got {len(features)}")
    features = np.asarray(features)                      # a plain array, also for memory-mapped input
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy.linalg.sqrtm without its deprecated `disp` flag (SciPy >= 1.16 returns only the root)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root


# "eigh" agreed with sqrtm within 3.1e-7 relative on every embedded run and within 1e-6 on rank-deficient synthetic
# cases, 5-7x faster at 2048-d; "gram" gives the same trace from an n×n problem when a feature set has fewer images
# than dimensions (200 samples of 2048-d pool3: ~50x faster than eigh), checked the same way (benchmarks/
# frechet_routes.py, tests/test_imagenet_metrics.py).
DEFAULT_FRECHET_ROUTE = "gram"
FRECHET_ROUTES = {
    "sqrtm": "scipy.linalg.sqrtm(sigma1 @ sigma2), ADM's eps retry and imaginary check (ADM's route)",
    "eigh": "tr sqrt(S1^1/2 S2 S1^1/2) from numpy.linalg.eigh / eigvalsh in float64, eigenvalues clipped at 0",
    "gram": "tr sqrt(S1 S2) = sum sqrt eigvalsh(Xc S2 Xc^T / (n-1)) for the n sample features X (centred Xc) when "
            "n <= d, float64, eigenvalues below n eps max (rounding of the exact zeros) as 0; the eigh route when "
            "n > d or only statistics are given",
}


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """(d, d) float64 S^1/2 of a covariance from its eigendecomposition; eigenvalues that rounding makes slightly
    negative (rank-deficient covariances: fewer images than dimensions) are 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(sigma1 @ sigma2) for covariances (symmetric PSD): the eigenvalues of sigma1 sigma2 are those of
    the symmetric S1^1/2 sigma2 S1^1/2, so two eigendecompositions replace the Schur-based sqrtm (negative
    eigenvalues from rounding as 0)."""
    root = psd_sqrt(sigma1)                                                                # (d, d) S1^1/2
    product = root @ np.asarray(sigma2, dtype=np.float64) @ root                           # (d, d) symmetric
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum())


def trace_sqrt_psd(product: np.ndarray) -> float:
    """Sum of the square roots of a symmetric PSD matrix's eigenvalues. Eigenvalues within rounding of 0 (below
    size * eps * the largest, numpy's matrix_rank tolerance) count as 0: they are the exact zeros of a
    rank-deficient product (the centring direction; rows beyond the rank), whose square roots would otherwise
    add ~sqrt(eps) each."""
    values = np.linalg.eigvalsh(product)
    tolerance = max(float(values[-1]), 0.0) * len(values) * np.finfo(np.float64).eps
    return float(np.sqrt(values[values > tolerance]).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, route: str = DEFAULT_FRECHET_ROUTE) -> float:
    """ADM's `FIDStatistics.frechet_distance` (TTUR's formula); `route` picks how tr sqrt(sigma1 sigma2) is
    computed (`FRECHET_ROUTES`): ADM's sqrtm with its eps / imaginary rules, or the symmetric eigh route (also
    for "gram", which needs the features: `frechet_distance_of_features`)."""
    if route not in FRECHET_ROUTES:
        raise ImageNetEvalError(f"unknown Fréchet route {route!r}; choose from {', '.join(FRECHET_ROUTES)}")
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ImageNetEvalError(f"statistics of different sizes: mu {mu1.shape} vs {mu2.shape}, "
                                f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    if route in ("eigh", "gram"):
        return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ImageNetEvalError(f"Fréchet distance: sqrtm has an imaginary component of "
                                    f"{np.max(np.abs(covmean.imag))} (ADM raises here too); the covariances are "
                                    f"numerically indefinite, usually from too few images for {len(mu1)}-d features")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_of_features(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                                 route: str = DEFAULT_FRECHET_ROUTE) -> float:
    """The Fréchet distance of ADM's statistics of `features` (n×d) to (mu2, sigma2).

    Route "gram" with n <= d: sigma1 = Xcᵀ Xc / (n-1), and sigma1 sigma2 = A B with A = Xcᵀ / sqrt(n-1) (d×n),
    B = Xc sigma2 / sqrt(n-1) (n×d); AB and BA share their nonzero eigenvalues, so tr sqrt(sigma1 sigma2) comes
    from the symmetric n×n BA, and tr sigma1 from Xc directly: no d×d decomposition at all."""
    features = np.asarray(features)
    count, dim = features.shape
    if route != "gram" or count > dim:
        return frechet_distance(*fid_statistics(features), mu2, sigma2, route=route)
    if count < 2:
        raise ImageNetEvalError(f"a covariance needs at least 2 images, got {count}")
    mu2, sigma2 = np.atleast_1d(mu2), np.atleast_2d(sigma2)
    if mu2.shape != (dim,) or sigma2.shape != (dim, dim):
        raise ImageNetEvalError(f"statistics of different sizes: features are {dim}-d, mu {mu2.shape}, "
                                f"sigma {sigma2.shape}")
    mu1 = np.mean(features, axis=0)                                        # (d,) in the features' dtype, as ADM
    values = features.astype(np.float64)
    centred = values - values.mean(axis=0)                                 # (n, d) as np.cov centres
    gram = centred @ np.asarray(sigma2, dtype=np.float64) @ centred.T / (count - 1)          # (n, n) symmetric
    trace_sqrt = trace_sqrt_psd((gram + gram.T) / 2)
    trace_sigma1 = float(np.einsum("ij,ij->", centred, centred)) / (count - 1)
    diff = mu1 - mu2
    return float(diff.dot(diff) + trace_sigma1 + np.trace(sigma2) - 2 * trace_sqrt)


# --------------------------------------------------------------------------------------------- IS

# ADM's rule is the default: it is what a user comparing against ADM's script gets at any sample count.
DEFAULT_IS_SPLIT_RULE = "adm"
IS_SPLIT_RULES = {
    "adm": "ADM's compute_inception_score: in-order splits of 5000 at every count, the last one partial",
    "ten-splits-below-50k": f"fewer than {ADM_IS_FULL_COUNT} images: 10 in-order splits of count // 10, the last "
                            f"count % 10 images left out (ADM uses 5000); from {ADM_IS_FULL_COUNT} on ADM's splits "
                            f"(the harness's rule up to task version 2)",
}


def is_splits(count: int, split_rule: str = DEFAULT_IS_SPLIT_RULE) -> dict:
    """How `count` images are split for the IS under `split_rule` (a key of `IS_SPLIT_RULES`)."""
    if split_rule not in IS_SPLIT_RULES:
        raise ImageNetEvalError(f"unknown IS split rule {split_rule!r}; choose from {', '.join(IS_SPLIT_RULES)}")
    named = {"split_rule": split_rule, "rule": IS_SPLIT_RULES[split_rule]}
    if split_rule == "ten-splits-below-50k" and count < ADM_IS_FULL_COUNT:
        if count < 10:
            raise ImageNetEvalError(f"the Inception Score needs at least 10 images (10 splits), got {count}")
        return {**named, "split_size": count // 10, "splits": 10, "dropped": count % 10}
    if count < 1:
        raise ImageNetEvalError(f"the Inception Score needs at least 1 image, got {count}")
    return {**named, "split_size": ADM_IS_SPLIT_SIZE, "splits": -(-count // ADM_IS_SPLIT_SIZE), "dropped": 0}


def softmax_float32(logits: np.ndarray, batch: int = ADM_SOFTMAX_BATCH) -> np.ndarray:
    """Row softmax in float32, batch by batch (ADM runs TF's softmax on 512 rows at a time)."""
    out = np.empty(logits.shape, dtype=np.float32)
    for start in range(0, len(logits), batch):
        x = np.asarray(logits[start:start + batch], dtype=np.float32)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        out[start:start + batch] = e / e.sum(axis=1, keepdims=True)
    return out


def inception_score(logits: np.ndarray, split_rule: str = DEFAULT_IS_SPLIT_RULE) -> tuple[float, list[float], dict]:
    """(mean IS, per-split scores, split info): improved-gan's formula on in-order splits, no shuffling."""
    info = is_splits(len(logits), split_rule)
    preds = softmax_float32(logits)
    used = len(preds) - info["dropped"]
    scores = []
    for start in range(0, used, info["split_size"]):
        part = preds[start:min(start + info["split_size"], used)]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(float(np.exp(np.mean(np.sum(kl, 1)))))
    return float(np.mean(scores)), scores, info


# --------------------------------------------------------------------------------------------- P / R

def pairwise_sq_distances(u: torch.Tensor, v: torch.Tensor, fp16: bool) -> torch.Tensor:
    """ADM's `_batch_pairwise_distances`: max(|u|² - 2 u·v + |v|², 0), R×C.

    fp16=True emulates TF's float16 graph on any device: inputs rounded to float16, squares in float16,
    row sums and the matmul accumulated in float32 (as TF's GPU kernels do) and rounded to float16, then
    every elementwise op in float16.
    """
    if not fp16:
        norm_u = (u * u).sum(1)
        norm_v = (v * v).sum(1)
        return torch.clamp_min(norm_u[:, None] - 2 * (u @ v.T) + norm_v[None, :], 0.0)
    u16, v16 = u.half(), v.half()
    norm_u = (u16 * u16).float().sum(1).half()                     # R
    norm_v = (v16 * v16).float().sum(1).half()                     # C
    uv = (u16.float() @ v16.float().T).half()                       # R×C; products of halves are exact in fp32
    return torch.clamp_min(norm_u[:, None] - 2 * uv + norm_v[None, :], 0.0)


class _Distances:
    """Block distances with ADM's per-block fp16 -> fp32 fallback; counts the blocks that fell back."""

    def __init__(self, fp16: bool):
        self.fp16 = fp16
        self.blocks = 0
        self.fallbacks = 0

    def __call__(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.blocks += 1
        if self.fp16:
            block = pairwise_sq_distances(u, v, fp16=True)
            if bool(torch.isfinite(block).all()):
                return block.float()
            self.fallbacks += 1
        return pairwise_sq_distances(u, v, fp16=False)


def manifold_radii(features: torch.Tensor, distances: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   k: int = PR_K, row_batch: int = PR_BLOCK, col_batch: int = PR_BLOCK) -> torch.Tensor:
    """Squared distance of every point to its k-th neighbour: the (k+1)-th smallest of its row (self included),
    in the features' dtype (`distances`: squared distances of two row blocks, e.g. a `_Distances`)."""
    count = len(features)
    radii = torch.empty(count, dtype=features.dtype, device=features.device)     # float32 for P/R as ADM
    for begin1 in range(0, count, row_batch):
        rows = features[begin1:begin1 + row_batch]
        smallest = []                                               # per column block, the k+1 smallest
        for begin2 in range(0, count, col_batch):
            block = distances(rows, features[begin2:begin2 + col_batch])
            smallest.append(torch.topk(block, min(k + 1, block.shape[1]), dim=1, largest=False).values)
        radii[begin1:begin1 + len(rows)] = torch.sort(torch.cat(smallest, dim=1), dim=1).values[:, k]
    return radii


def precision_recall(reference: np.ndarray, samples: np.ndarray, *, fp16: bool = True, k: int = PR_K,
                     row_batch: int = PR_BLOCK, col_batch: int = PR_BLOCK,
                     device: str | torch.device = "cpu") -> dict:
    """Improved precision/recall (Kynkäänniemi et al.) as ADM computes it.

    precision: fraction of samples inside some reference hypersphere; recall: fraction of reference
    points inside some sample hypersphere. Returns also how many distance blocks fell back to float32.
    """
    for name, features in (("reference", reference), ("samples", samples)):
        if len(features) < k + 1:
            raise ImageNetEvalError(f"precision/recall need at least {k + 1} {name} images (k={k}), "
                                    f"got {len(features)}")
    ref = torch.from_numpy(np.array(reference, dtype=np.float32)).to(device)
    smp = torch.from_numpy(np.array(samples, dtype=np.float32)).to(device)
    distances = _Distances(fp16)
    radii_ref = manifold_radii(ref, distances, k, row_batch, col_batch)
    radii_smp = manifold_radii(smp, distances, k, row_batch, col_batch)
    ref_in = torch.zeros(len(ref), dtype=torch.bool, device=device)
    smp_in = torch.zeros(len(smp), dtype=torch.bool, device=device)
    for begin1 in range(0, len(ref), row_batch):
        end1 = begin1 + row_batch
        for begin2 in range(0, len(smp), col_batch):
            end2 = begin2 + col_batch
            block = distances(ref[begin1:end1], smp[begin2:end2])  # rows: reference, columns: samples
            ref_in[begin1:end1] |= (block <= radii_smp[None, begin2:end2]).any(dim=1)
            smp_in[begin2:end2] |= (block <= radii_ref[begin1:end1, None]).any(dim=0)
    return {"precision": float(smp_in.double().mean()), "recall": float(ref_in.double().mean()),
            "distance_blocks": distances.blocks, "fp32_fallback_blocks": distances.fallbacks}


# --------------------------------------------------------------------------------------------- KID

def kid_subset_size(count_samples: int, count_reference: int) -> int:
    return min(KID_SUBSET_SIZE, count_samples, count_reference)


def kernel_inception_distance(samples: np.ndarray, reference: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int | None = None, seed: int = KID_SEED) -> dict:
    """torch-fidelity's KID (input1 = samples, input2 = reference), called through the library itself."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = subset_size or kid_subset_size(len(samples), len(reference))
    if size < 2:
        raise ImageNetEvalError(f"KID needs at least 2 images per set, got {len(samples)} and {len(reference)}")
    out = kid_features_to_metric(torch.from_numpy(np.array(samples, dtype=np.float32)),
                                 torch.from_numpy(np.array(reference, dtype=np.float32)),
                                 kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD], "subset_size": size,
            "subsets": subsets, "seed": seed}
