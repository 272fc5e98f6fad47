"""Metrics over any extractor: precision/recall/density/coverage vs prdc, CMMD vs cmmd's formula, FD∞ on Gaussians of known FD."""
import json
from pathlib import Path

import numpy as np
import pytest

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.extractor_metrics import cmmd, fd_infinity, prdc
from evaluators.imagenet.metrics import fid_statistics, frechet_distance

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "imagenet_metrics" / "golden.json").read_text())


def _prdc_inputs():                      # tests/fixtures/imagenet_metrics/make_golden.py: prdc_inputs
    rng = np.random.default_rng(2020)
    return rng.normal(size=(700, 24)), rng.normal(0.25, 1.1, size=(600, 24))


def _cmmd_inputs():                      # make_golden.py: cmmd_inputs, before its L2 normalisation
    rng = np.random.default_rng(2024)
    return rng.normal(size=(500, 64)), rng.normal(0.05, 1.0, size=(400, 64))


# --------------------------------------------------------------------------------------------- precision / recall / density / coverage

@pytest.mark.parametrize("block", [10000, 97])
def test_prdc_equals_the_prdc_package(block):
    """All four are counts over strict comparisons, so they equal prdc's exactly unless a distance ties a radius
    within float64 rounding; 1e-12 leaves room only for the final division."""
    reference, samples = _prdc_inputs()
    ours = prdc(reference, samples, block=block)
    golden = GOLDEN["prdc"]
    assert ours["k"] == golden["k"] == 5
    for name in ("precision", "recall", "density", "coverage"):
        assert abs(ours[name] - golden[name]) <= 1e-12, name
        assert 0 < golden[name] < 1


def test_prdc_on_points_with_known_answer():
    # reference 0, 1, ..., 6 on a line: 5th-neighbour radii (self as the 0th) 5, 4, 3, 3, 3, 4, 5
    reference = np.arange(7, dtype=np.float64)[:, None]
    # samples 0 and 100..105: the radius of 0 is 104 (its 5th neighbour), of 100 .. 105 are 5, 4, 3, 3, 4, 5
    samples = np.array([[0.0], *([100.0 + i] for i in range(6))])
    # 0.0 lies inside the balls of reference 0, 1, 2 and on the border of 3's (distance 3 = radius 3: strict <,
    # outside); 100 .. 105 in none. density = 3 / 7 / k, coverage = 3 of 7 reference balls hold a sample,
    # precision = 1 of 7 samples in a reference ball; recall: every reference point lies in sample 0's ball
    result = prdc(reference, samples)
    assert result["density"] == pytest.approx(3 / 7 / 5) and result["coverage"] == pytest.approx(3 / 7)
    assert result["precision"] == pytest.approx(1 / 7) and result["recall"] == 1.0
    with pytest.raises(ImageNetEvalError, match="at least 6 reference"):
        prdc(reference[:5], samples)
    with pytest.raises(ImageNetEvalError, match="at least 6 sample"):
        prdc(reference, samples[:5])


# --------------------------------------------------------------------------------------------- CMMD

@pytest.mark.parametrize("block", [10000, 64])
def test_cmmd_equals_the_reference_formula(block):
    reference, samples = _cmmd_inputs()
    ours = cmmd(reference, samples, block=block)
    for value in (GOLDEN["cmmd"]["numpy_float64"], GOLDEN["cmmd"]["jax_float64"]):
        assert abs(ours - value) <= 1e-6 * value, (ours, value)
    # embeddings are L2-normalised first: rescaling rows changes nothing
    rescaled = cmmd(reference * np.linspace(0.5, 3, len(reference))[:, None], samples * 7.0, block=block)
    assert rescaled == pytest.approx(ours, rel=1e-9)


def test_cmmd_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    reference, samples = _cmmd_inputs()
    assert abs(cmmd(reference, reference)) < 1e-9
    assert cmmd(reference, samples + 0.5) > 10 * cmmd(reference, samples) > 0


# --------------------------------------------------------------------------------------------- FD∞

def _gaussian_case(seed, count=4000, dim=64):
    """Samples from N(0, diag(a)); reference statistics exact: N(m, diag(b)), so FD = |m|² + Σ (√a - √b)²."""
    a, b, m = np.linspace(0.5, 2.0, dim), np.linspace(2.0, 0.5, dim), np.full(dim, 0.1)
    samples = (np.random.default_rng(seed).normal(size=(count, dim)) * np.sqrt(a)).astype(np.float32)
    return samples, m, np.diag(b), float(m @ m + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fd_infinity_is_closer_to_the_true_fd_than_fd_at_all_samples(seed):
    samples, mu_ref, sigma_ref, true_fd = _gaussian_case(seed)
    fd_all = frechet_distance(*fid_statistics(samples), mu_ref, sigma_ref)
    result = fd_infinity(samples, mu_ref, sigma_ref, min_count=500, seed=seed)
    # FD_N is biased upwards by O(1/N); the intercept removes it (0.25-0.43 vs <= 0.05 on these three)
    assert fd_all - true_fd > 0.2
    assert abs(result["fd_infinity"] - true_fd) < abs(fd_all - true_fd) / 3
    assert result["slope"] > 0 and result["fd"][-1] == pytest.approx(fd_all, rel=1e-9)


def test_fd_infinity_counts_follow_the_reference_and_are_seeded():
    samples, mu_ref, sigma_ref, _ = _gaussian_case(0, count=1200, dim=8)
    result = fd_infinity(samples, mu_ref, sigma_ref, min_count=500, seed=7)
    assert result["counts"] == np.linspace(500, 1200, 15).astype(np.int32).tolist()
    assert result == fd_infinity(samples, mu_ref, sigma_ref, min_count=500, seed=7)
    assert result["fd"] != fd_infinity(samples, mu_ref, sigma_ref, min_count=500, seed=8)["fd"]
    with pytest.raises(ImageNetEvalError, match="more than 5000 samples, got 1200"):
        fd_infinity(samples, mu_ref, sigma_ref)
