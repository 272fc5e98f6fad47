"""ADM metric semantics on constructed features: FID/KID vs torch-fidelity, IS split order, precision/recall."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.metrics import (
    _Distances,
    fid_statistics,
    frechet_distance,
    frechet_distance_of_features,
    inception_score,
    is_splits,
    kernel_inception_distance,
    manifold_radii,
    pairwise_sq_distances,
    precision_recall,
)

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "imagenet_metrics" / "golden.json").read_text())


def _features(seed, count=500, dim=64, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return ((rng.normal(size=(count, dim)) @ mixing) * scale + shift).astype(np.float32)


# --------------------------------------------------------------------------------------------- FID / KID

def test_fid_of_a_set_with_itself_is_zero():
    mu, sigma = fid_statistics(_features(0))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_fid_statistics_and_distance_match_torch_fidelity():
    a, b = _features(1), _features(2, shift=0.3, scale=1.2)
    ours_a, ours_b = fid_statistics(a), fid_statistics(b)
    theirs_a = fid_features_to_statistics(torch.from_numpy(a))
    theirs_b = fid_features_to_statistics(torch.from_numpy(b))
    np.testing.assert_array_equal(ours_a[0], theirs_a["mu"])
    np.testing.assert_array_equal(ours_a[1], theirs_a["sigma"])
    assert ours_a[0].dtype == np.float32 and ours_a[1].dtype == np.float64        # ADM's dtypes
    ours = frechet_distance(*ours_a, *ours_b)
    theirs = fid_statistics_to_metric(theirs_a, theirs_b, verbose=False)["frechet_inception_distance"]
    assert ours > 1.0
    assert abs(ours - theirs) <= 1e-6 * abs(theirs)


@pytest.mark.parametrize("count_a, count_b", [(60, 90), (90, 90), (2000, 3000)])
def test_the_eigh_route_agrees_with_sqrtm(count_a, count_b):
    """Within 1e-6 relative, also for rank-deficient covariances (fewer images than the 256 dimensions, as the
    embedded digits' 200 samples give for 2048-d pool3)."""
    a, b = _features(10, count=count_a, dim=256), _features(11, count=count_b, dim=256, shift=0.3, scale=1.2)
    stats_a, stats_b = fid_statistics(a), fid_statistics(b)
    sqrtm, eigh = (frechet_distance(*stats_a, *stats_b, route=route) for route in ("sqrtm", "eigh"))
    assert sqrtm > 1.0 and abs(eigh - sqrtm) <= 1e-6 * sqrtm, (sqrtm, eigh)
    # a set against itself: 0 up to the rounding floor of the null space (sqrt(eps * |sigma|) per null direction)
    assert abs(frechet_distance(*stats_a, *stats_a, route="eigh")) < 1e-6 * np.trace(stats_a[1])
    with pytest.raises(ImageNetEvalError, match="unknown Fréchet route 'svd'"):
        frechet_distance(*stats_a, *stats_b, route="svd")


def _exact_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets without a matrix square root: sigma_a sigma_b = (Ac^T Ac)(Bc^T Bc) / ((n_a-1)(n_b-1))
    shares its nonzero eigenvalues with C C^T, C = Ac Bc^T, so tr sqrt is C's nuclear norm: singular values carry
    an absolute error of eps |C|, where the square-root routes' null directions carry sqrt(eps)."""
    (mu_a, sigma_a), (mu_b, sigma_b) = fid_statistics(a), fid_statistics(b)
    centred_a, centred_b = (x.astype(np.float64) - x.astype(np.float64).mean(axis=0) for x in (a, b))
    nuclear = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = mu_a - mu_b
    return float(diff.dot(diff) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * nuclear)


@pytest.mark.parametrize("count_a, count_b", [(60, 90), (200, 500), (256, 90), (2000, 3000)])
def test_the_gram_route_agrees_with_sqrtm_and_the_exact_value(count_a, count_b):
    """The n×n form (n <= d) is within 1e-7 relative of the exact value and 1e-6 of sqrtm on rank-deficient
    covariances (as sqrtm and eigh are: each has a rounding floor in the null space), and is eigh where it
    falls back to it (n > d)."""
    a, b = _features(12, count=count_a, dim=256), _features(13, count=count_b, dim=256, shift=0.3, scale=1.2)
    stats_a, stats_b = fid_statistics(a), fid_statistics(b)
    exact, sqrtm = _exact_fid(a, b), frechet_distance(*stats_a, *stats_b, route="sqrtm")
    gram = frechet_distance_of_features(a, *stats_b, route="gram")
    assert exact > 1.0 and abs(gram - exact) <= 1e-7 * exact and abs(gram - sqrtm) <= 1e-6 * sqrtm, (exact, sqrtm, gram)
    for route in ("sqrtm", "eigh"):          # the other routes through the features entry point are unchanged
        assert frechet_distance_of_features(a, *stats_b, route=route) == frechet_distance(*stats_a, *stats_b,
                                                                                           route=route)
    if count_a > a.shape[1]:
        assert gram == frechet_distance(*stats_a, *stats_b, route="eigh")
    assert abs(frechet_distance_of_features(a, *stats_a, route="gram")) < 1e-6 * np.trace(stats_a[1])
    with pytest.raises(ImageNetEvalError, match="statistics of different sizes"):
        frechet_distance_of_features(a[:, :100], *stats_b, route="gram")


def test_fid_rejects_statistics_of_different_sizes():
    mu, sigma = fid_statistics(_features(3, dim=8))
    with pytest.raises(ImageNetEvalError, match="different sizes"):
        frechet_distance(mu, sigma, mu[:4], sigma[:4, :4])


def test_kid_matches_torch_fidelity_and_its_defaults():
    samples, reference = _features(4, count=100), _features(5, count=150, shift=0.2)
    ours = kernel_inception_distance(samples, reference)
    assert ours["subset_size"] == 100 and ours["subsets"] == 100 and ours["seed"] == 2020
    theirs = kid_features_to_metric(torch.from_numpy(samples), torch.from_numpy(reference), kid_subsets=100,
                                    kid_subset_size=100, rng_seed=2020, verbose=False)
    assert abs(ours["kid"] - theirs["kernel_inception_distance_mean"]) <= 1e-6 * abs(ours["kid"])
    assert abs(ours["kid_std"] - theirs["kernel_inception_distance_std"]) <= 1e-6 * abs(ours["kid_std"])
    assert ours["kid"] > 0


# --------------------------------------------------------------------------------------------- IS

def _order_sensitive_logits():
    """100 confident predictions: 50 of class 0, then 50 cycling through classes 0..9."""
    classes = np.concatenate([np.zeros(50, dtype=int), np.arange(50) % 10])
    logits = np.zeros((100, 10), dtype=np.float32)
    logits[np.arange(100), classes] = 30.0
    return logits


def test_inception_score_uses_in_order_splits():
    logits = _order_sensitive_logits()
    score, per_split, info = inception_score(logits, split_rule="ten-splits-below-50k")
    assert info["splits"] == 10 and info["split_size"] == 10 and info["dropped"] == 0
    # splits 1-5 hold one class (IS 1), splits 6-10 all ten classes (IS 10)
    np.testing.assert_allclose(per_split, [1.0] * 5 + [10.0] * 5, rtol=1e-5)
    assert score == pytest.approx(5.5, rel=1e-5)
    in_order = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)["inception_score_mean"]
    shuffled = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True)["inception_score_mean"]
    assert in_order == pytest.approx(score, rel=1e-5)
    assert abs(shuffled - score) > 0.5            # torch-fidelity's default shuffling changes the answer


def test_inception_score_split_rule():
    assert is_splits(50000) == {**is_splits(50000), "split_size": 5000, "splits": 10, "dropped": 0}
    assert is_splits(60001)["splits"] == 13            # ADM: in-order 5000s, the last one partial
    # the default is ADM's rule below 50,000 too (issue 19 item 5): one partial split of 1234
    adm = is_splits(1234)
    assert (adm["split_rule"], adm["split_size"], adm["splits"], adm["dropped"]) == ("adm", 5000, 1, 0)
    assert is_splits(10500)["splits"] == 3 and is_splits(1)["splits"] == 1
    small = is_splits(1234, split_rule="ten-splits-below-50k")
    assert (small["split_size"], small["splits"], small["dropped"]) == (123, 10, 4)
    assert "ADM uses 5000" in small["rule"] and small["split_rule"] == "ten-splits-below-50k"
    assert is_splits(60001, "ten-splits-below-50k") == {**is_splits(60001), "split_rule": "ten-splits-below-50k",
                                                       "rule": small["rule"]}
    with pytest.raises(ImageNetEvalError, match="at least 10"):
        is_splits(9, split_rule="ten-splits-below-50k")
    with pytest.raises(ImageNetEvalError, match="at least 1 image"):
        is_splits(0)
    with pytest.raises(ImageNetEvalError, match="unknown IS split rule 'shuffled'"):
        is_splits(100, split_rule="shuffled")


def test_inception_score_default_splits_as_adm_below_50k():
    """100 images: ADM scores them as one split, so the class imbalance across the set shows (exp of the entropy
    of the mean prediction: 55 % class 0, 5 % each other class), unlike the mean of ten in-order splits."""
    score, per_split, info = inception_score(_order_sensitive_logits())
    marginal = np.array([0.55] + [0.05] * 9)
    assert info["splits"] == 1 and len(per_split) == 1
    assert score == pytest.approx(np.exp(-(marginal * np.log(marginal)).sum()), rel=1e-5)
    ten_splits = inception_score(_order_sensitive_logits(), split_rule="ten-splits-below-50k")[0]
    assert score == pytest.approx(5.35, abs=0.01) and ten_splits == pytest.approx(5.5, rel=1e-5)


def test_inception_score_on_10500_logits_equals_adms_compute_inception_score():
    """Issue 19's check: ADM's own function on the same logits (tests/fixtures/imagenet_metrics) gives splits of
    5000, 5000 and 500; the harness's default agrees within 1e-6 relative, the ten-split rule does not."""
    logits = np.random.default_rng(5000).normal(0, 3, size=(10500, 1008)).astype(np.float32)   # make_golden.py
    score, per_split, info = inception_score(logits)
    assert (info["split_size"], info["splits"], len(per_split)) == (5000, 3, 3)
    assert abs(score - GOLDEN["inception_score"]["adm"]) <= 1e-6 * GOLDEN["inception_score"]["adm"]
    ten_splits = inception_score(logits, split_rule="ten-splits-below-50k")[0]
    assert abs(ten_splits - score) > 1e-3 * score


# --------------------------------------------------------------------------------------------- P / R

def test_precision_recall_on_points_with_known_answer():
    # reference 0,1,2,3 -> squared 3rd-NN radii 9,4,4,9; samples: 1.5 lies inside (2.25 <= 9), 20..23 do not.
    # sample radii: 1.5 -> 20.5² (covers every reference point), so recall is 1.
    reference = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    samples = np.array([[1.5], [20.0], [21.0], [22.0], [23.0]], dtype=np.float32)
    for fp16 in (True, False):
        result = precision_recall(reference, samples, fp16=fp16)
        assert (result["precision"], result["recall"]) == (0.2, 1.0)
    radii = manifold_radii(torch.from_numpy(reference), _Distances(fp16=False))
    np.testing.assert_array_equal(radii.numpy(), [9, 4, 4, 9])


def test_precision_recall_convention_tight_samples_inside_spread_reference():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1.0, size=(300, 8)).astype(np.float32)
    samples = rng.normal(0, 0.05, size=(300, 8)).astype(np.float32)
    result = precision_recall(reference, samples)
    assert result["precision"] > 0.95 and result["recall"] < 0.1
    same = precision_recall(reference, reference)
    assert (same["precision"], same["recall"]) == (1.0, 1.0)


def test_radii_match_numpy_partition_as_adm_and_blocks_do_not_matter():
    features = _features(6, count=37, dim=5)
    squared = ((features[:, None, :].astype(np.float64) - features[None, :, :]) ** 2).sum(-1)
    adm = np.partition(squared, [0, 1, 2, 3], axis=1)[:, 3]
    radii = manifold_radii(torch.from_numpy(features), _Distances(fp16=False), row_batch=7, col_batch=5)
    np.testing.assert_allclose(radii.numpy(), adm, rtol=1e-4, atol=1e-5)
    other = _features(7, count=23, dim=5, shift=0.5)
    blocked = precision_recall(features, other, fp16=False, row_batch=7, col_batch=5)
    whole = precision_recall(features, other, fp16=False)
    assert (blocked["precision"], blocked["recall"]) == (whole["precision"], whole["recall"])
    assert blocked["distance_blocks"] > whole["distance_blocks"]


def test_fp16_distances_follow_a_float16_graph():
    u, v = _features(8, count=20, dim=32, shift=3.0), _features(9, count=15, dim=32, shift=3.0)
    u16, v16 = u.astype(np.float16), v.astype(np.float16)
    norm_u = (u16 * u16).astype(np.float32).sum(1).astype(np.float16)
    norm_v = (v16 * v16).astype(np.float32).sum(1).astype(np.float16)
    uv = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
    expected = np.maximum(norm_u[:, None] - np.float16(2) * uv + norm_v[None, :], np.float16(0))
    ours = pairwise_sq_distances(torch.from_numpy(u), torch.from_numpy(v), fp16=True)
    assert ours.dtype == torch.float16
    ulp = np.spacing(np.abs(expected)).astype(np.float32)
    assert (np.abs(ours.float().numpy() - expected.astype(np.float32)) <= ulp).all()


def test_fp16_distances_can_change_the_result_and_fall_back_on_overflow():
    rng = np.random.default_rng(0)
    # |u|² ≈ 6400, where float16 steps by 4: the small distances between these points are lost in fp16
    reference = (10.0 + rng.normal(0, 0.1, (60, 64))).astype(np.float32)
    samples = (10.0 + rng.normal(0, 0.12, (60, 64))).astype(np.float32)
    fp16, fp32 = precision_recall(reference, samples), precision_recall(reference, samples, fp16=False)
    assert fp16["precision"] != fp32["precision"] and fp16["fp32_fallback_blocks"] == 0
    # |u|² ≈ 100,000 overflows float16: every block is recomputed in float32, as ADM's tf.cond does
    big = (rng.normal(0, 1, (30, 64)) + 40).astype(np.float32)
    overflow = precision_recall(big, big + 0.5)
    assert overflow["fp32_fallback_blocks"] == overflow["distance_blocks"] == 3
    exact = precision_recall(big, big + 0.5, fp16=False)
    assert (overflow["precision"], overflow["recall"]) == (exact["precision"], exact["recall"])


def test_precision_recall_needs_k_plus_one_points():
    with pytest.raises(ImageNetEvalError, match="at least 4 reference"):
        precision_recall(np.zeros((3, 2), np.float32), np.zeros((10, 2), np.float32))
