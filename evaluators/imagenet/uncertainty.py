"""How much an FID moves with the samples: a seeded bootstrap over the samples and FID(N) on growing subsets.

Both work from the cached pool3 features of the samples and the fixed reference statistics (mu_r, sigma_r);
only the samples are resampled, the reference is never touched.

A resample draws n sample indices with replacement; with c_i the number of times row i was drawn (the counts
act as weights, no duplicated row is ever materialised) its statistics are

    mu = sum_i c_i x_i / n,    sigma = (X^T diag(c) X - n mu mu^T) / (n - 1),

and its FD = |mu - mu_r|^2 + tr sigma + tr sigma_r - 2 tr sqrt(sigma sigma_r), the trace term by the
symmetric route of `metrics.trace_sqrt_product`: the eigenvalues of sigma sigma_r are those of
R sigma R (R = sigma_r^1/2) and, writing sigma = Z^T Z with the m drawn rows
Z = diag(sqrt(c)) (X_drawn - mu) / sqrt(n - 1), also those of the m x m matrix Z sigma_r Z^T. Two methods
compute the same number:

* "gram" (n <= d, e.g. the embedded default's 200 samples of 2048-d features): K = X sigma_r X^T and X X^T are
  formed once (n d^2 flops); each resample then costs O(m^3) on the m <= n distinct rows it drew;
* "root" (n > d): R from one eigendecomposition of sigma_r, X R once; each resample costs m d^2
  (Z^T Z, d x d) or m^2 d (Z Z^T) whichever is smaller, i.e. about one FID's covariance per resample.

FID(N) of a set with more images than dimensions never copies the features: the nested subsets' statistics are
streamed (statistics.FeatureStatistics) in the permutation's order, chunk by chunk, with an FD at each N.

A resample's FID is biased upward against the full-sample FID (it holds about 63% distinct samples); the
interval reported is the plain 2.5/97.5 percentile interval of the resampled FIDs, not bias-corrected.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.metrics import frechet_distance_of_features, psd_sqrt, trace_sqrt_psd
from evaluators.imagenet.statistics import FeatureStatistics

# 1000 resamples of the embedded default (200 x 2048, "gram") take ~0.7 s on 2 CPU cores, a third of that FID's own
# ~2.5 s (fid_statistics + eigh route). With more samples than feature dimensions ("root") every resample costs
# about one FID, so the default then runs none: `resolve_resamples`.
DEFAULT_BOOTSTRAP_RESAMPLES = 1000
DEFAULT_BOOTSTRAP_SEED = 0
FID_VS_N_START = 50          # FID(N) at N = 50, 100, 200, ... below the sample count, and at the count itself
METHODS = ("auto", "gram", "root")
STREAM_CHUNK = 1024         # rows per statistics update of the streamed FID(N)
SMALL_PRODUCT = 512         # products up to this size are computed single-threaded (`_small_matrices`)
RESAMPLED = "samples only: n indices drawn with replacement from the n samples; reference statistics fixed"


class ResampledFrechet:
    """FD of weighted subsets of `features` (n x d) against fixed reference statistics, without copying rows.

    `distance(counts)`: counts[i] = how often sample i is in the subset (0 = left out); the subset holds
    counts.sum() images. Everything is float64.
    """

    def __init__(self, features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray, method: str = "auto"):
        if method not in METHODS:
            raise ImageNetEvalError(f"unknown resampling method {method!r}; choose from {', '.join(METHODS)}")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ImageNetEvalError(f"resampling needs at least 2 feature rows, got shape {x.shape}")
        sigma_ref = np.atleast_2d(np.asarray(sigma_ref, dtype=np.float64))
        mu_ref = np.atleast_1d(np.asarray(mu_ref, dtype=np.float64))
        count, dim = x.shape
        if mu_ref.shape != (dim,) or sigma_ref.shape != (dim, dim):
            raise ImageNetEvalError(f"reference statistics of size {mu_ref.shape} / {sigma_ref.shape} do not fit "
                                    f"{dim}-d features")
        self.count, self.dim = count, dim
        self.method = ("gram" if count <= dim else "root") if method == "auto" else method
        center = x.mean(axis=0)
        self._x = x - center                           # covariances are shift-invariant: centre once for accuracy
        self._offset = mu_ref - center                 # mu_ref in the centred coordinates
        self._offset_sq = float(self._offset @ self._offset)
        self._trace_ref = float(np.trace(sigma_ref))
        self._row_sq = np.einsum("ij,ij->i", self._x, self._x)
        if self.method == "gram":
            self._kernel = self._x @ sigma_ref @ self._x.T                  # n x n: X sigma_r X^T
            self._kernel = (self._kernel + self._kernel.T) / 2
            self._gram = self._x @ self._x.T                                  # n x n: X X^T
            self._x_offset = self._x @ self._offset                           # n
        else:
            self._rooted = self._x @ psd_sqrt(sigma_ref)                       # n x d: X R, R = sigma_r^1/2

    def distance(self, counts: np.ndarray) -> float:
        counts = np.asarray(counts)
        if counts.shape != (self.count,):
            raise ImageNetEvalError(f"counts must have one entry per sample ({self.count}), got {counts.shape}")
        drawn = np.flatnonzero(counts)
        weights = counts[drawn].astype(np.float64)
        total = float(weights.sum())
        if total < 2:
            raise ImageNetEvalError(f"a covariance needs at least 2 images, got {total:g}")
        if self.method == "gram":
            return self._gram_distance(drawn, weights, total)
        return self._root_distance(drawn, weights, total)

    def _gram_distance(self, drawn: np.ndarray, weights: np.ndarray, total: float) -> float:
        block = np.ix_(drawn, drawn)
        kernel, gram = self._kernel[block], self._gram[block]
        k = kernel @ weights / total                     # X_i sigma_r mu
        k_mean = float(weights @ k) / total              # mu sigma_r mu
        g = gram @ weights / total                       # X_i . mu
        mean_sq = float(weights @ g) / total             # |mu|^2
        scale = np.sqrt(weights)
        product = (kernel - k[:, None] - k[None, :] + k_mean) * np.outer(scale, scale) / (total - 1)
        trace_sqrt = trace_sqrt_psd(product)
        trace = float(weights @ (self._row_sq[drawn] - 2 * g + mean_sq)) / (total - 1)
        diff_sq = mean_sq - 2 * float(weights @ self._x_offset[drawn]) / total + self._offset_sq
        return diff_sq + trace + self._trace_ref - 2 * trace_sqrt

    def _root_distance(self, drawn: np.ndarray, weights: np.ndarray, total: float) -> float:
        rows, rooted = self._x[drawn], self._rooted[drawn]
        mean = weights @ rows / total
        scale = np.sqrt(weights / (total - 1))[:, None]
        z = (rooted - weights @ rooted / total) * scale             # m x d, Z R with sigma = Z^T Z
        product = z @ z.T if len(drawn) <= self.dim else z.T @ z    # the smaller of Z R R Z^T and R Z^T Z R
        trace_sqrt = trace_sqrt_psd((product + product.T) / 2)
        trace = float(weights @ self._row_sq[drawn] - total * (mean @ mean)) / (total - 1)
        diff = mean - self._offset
        return float(diff @ diff) + trace + self._trace_ref - 2 * trace_sqrt


def _small_matrices(size: int):
    """One BLAS/LAPACK thread while the products are small: at 126 x 126 a threaded eigvalsh is ~20x slower on
    2 cores (measured) than a single-threaded one."""
    if size > SMALL_PRODUCT:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency
    except ImportError:                                  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def resolve_resamples(resamples: int | None, count: int, dim: int) -> tuple[int, str | None]:
    """(resamples to run, why none are run): None = the default, which runs only where it is cheap (count <= dim)."""
    if resamples is not None:
        if resamples < 0 or resamples == 1:
            raise ImageNetEvalError(f"--bootstrap takes 0 (off) or at least 2 resamples, got {resamples}")
        return resamples, None if resamples else "disabled (--bootstrap 0)"
    if count <= dim:
        return DEFAULT_BOOTSTRAP_RESAMPLES, None
    return 0, (f"not run by default: {count} samples > {dim} feature dimensions, so every resample costs about "
               f"one FID ({count}x{dim}^2 flops); pass --bootstrap B to run B of them")


def bootstrap_counts(count: int, resamples: int, seed: int):
    """Yield, per resample, how often each of `count` samples was drawn (count draws with replacement)."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, count, size=count), minlength=count)


def bootstrap_fid(features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray, *,
                  resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES, seed: int = DEFAULT_BOOTSTRAP_SEED,
                  method: str = "auto") -> dict:
    """The FID of `resamples` bootstrap resamples of the samples against the fixed reference: mean, std, the
    2.5/97.5 percentiles and the settings."""
    if resamples < 2:
        raise ImageNetEvalError(f"a bootstrap needs at least 2 resamples, got {resamples}")
    started = time.perf_counter()
    frechet = ResampledFrechet(features, mu_ref, sigma_ref, method)
    with _small_matrices(min(frechet.count, frechet.dim)):
        fids = np.array([frechet.distance(counts) for counts in bootstrap_counts(frechet.count, resamples, seed)])
    low, high = np.percentile(fids, [2.5, 97.5])
    return {"mean": float(fids.mean()), "std": float(fids.std(ddof=1)), "p2.5": float(low), "p97.5": float(high),
            "resamples": resamples, "seed": seed, "count": frechet.count, "resampled": RESAMPLED,
            "interval": "2.5/97.5 percentiles of the resampled FIDs (not bias-corrected)",
            "method": frechet.method, "seconds": round(time.perf_counter() - started, 3)}


def fid_vs_n_sizes(count: int, start: int = FID_VS_N_START) -> list[int]:
    """start, 2 start, 4 start, ... below `count`, then `count` itself."""
    sizes, size = [], start
    while size < count:
        sizes.append(size)
        size *= 2
    return sizes + [count]


def nested_subset(count: int, size: int, seed: int) -> np.ndarray:
    """0/1 counts selecting the first `size` of a seeded permutation of `count` samples: the subsets of one seed are
    nested (the first 100 hold the first 50), so FID(N) at growing N follows one set of samples."""
    if not 2 <= size <= count:
        raise ImageNetEvalError(f"a subset of {count} samples takes 2 to {count} of them, not {size}")
    counts = np.zeros(count, dtype=np.int64)
    counts[np.random.default_rng(seed).permutation(count)[:size]] = 1
    return counts


def fid_of_first_n(frechet: ResampledFrechet, size: int, seed: int = DEFAULT_BOOTSTRAP_SEED) -> float:
    """FID of the first `size` samples of the seeded permutation: one point of `fid_vs_n`'s curve, at any size."""
    with _small_matrices(min(size, frechet.dim)):
        return frechet.distance(nested_subset(frechet.count, size, seed))


def fid_vs_n(features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray, *, seed: int = DEFAULT_BOOTSTRAP_SEED,
             full_fid: float | None = None, method: str = "auto") -> dict:
    """FID of the first N samples of a seeded permutation for N in `fid_vs_n_sizes`; at the full count the FID of
    all samples (`full_fid`, the reported value, when given). method "auto" streams the statistics when there are
    more samples than dimensions (`_streamed_fids`), else resamples with weights (`ResampledFrechet`)."""
    started = time.perf_counter()
    count, dim = np.shape(features)
    sizes = fid_vs_n_sizes(count)
    wanted = sizes[:-1] if full_fid is not None else sizes
    if method == "auto" and count > dim:
        order = np.random.default_rng(seed).permutation(count)
        method, fids = "streamed", _streamed_fids(features, order, wanted, mu_ref, sigma_ref)
    else:
        frechet = ResampledFrechet(features, mu_ref, sigma_ref, method)
        method, fids = frechet.method, [fid_of_first_n(frechet, size, seed) for size in wanted]
    if full_fid is not None:
        fids.append(float(full_fid))
    return {"n": sizes, "fid": fids, "seed": seed,
            "subsets": "first N of a seeded permutation of the samples (nested); reference statistics fixed",
            "full_count": "the reported FID" if full_fid is not None else "computed here",
            "method": method, "seconds": round(time.perf_counter() - started, 3)}


def _streamed_fids(features: np.ndarray, order: np.ndarray, sizes: list[int], mu_ref: np.ndarray,
                   sigma_ref: np.ndarray) -> list[float]:
    """FID of the first N rows of `order` for each N of `sizes` (ascending): up to d rows from the rows themselves
    (the gram route), beyond that from float64 sums streamed over `order` in chunks, so at most a chunk of rows is
    copied at a time."""
    dim = np.shape(features)[1]
    mu_ref, sigma_ref = np.asarray(mu_ref, dtype=np.float64), np.asarray(sigma_ref, dtype=np.float64)
    root = psd_sqrt(sigma_ref)                                                      # (d, d) sigma_r^1/2, once
    stats, done, fids = FeatureStatistics(dim), 0, []
    for size in sizes:
        if size <= dim:
            fids.append(frechet_distance_of_features(features[np.sort(order[:size])], mu_ref, sigma_ref))
            continue
        for begin in range(done, size, STREAM_CHUNK):         # sorted rows: a memory map is read in file order
            stats.update(features[np.sort(order[begin:min(begin + STREAM_CHUNK, size)])])
        done = size
        mu, sigma = stats.mu(), stats.sigma()
        product = root @ sigma @ root                       # (d, d): shares its eigenvalues with sigma sigma_r
        diff = mu - mu_ref
        fids.append(float(diff @ diff + np.trace(sigma) + np.trace(sigma_ref)
                          - 2 * trace_sqrt_psd((product + product.T) / 2)))
    return fids
