"""Streaming float64 feature statistics: np.cov / np.mean equivalence, merging in any split (the same float64
values as one pass), the ranks' gather, saving, FD."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.metrics import fid_statistics, frechet_distance
from evaluators.imagenet.statistics import FeatureStatistics


def _features(seed, count=3000, dim=48, shift=3.0, dtype=np.float32):
    """Correlated features with a mean (3) well above their spread (~1), where Σxxᵀ - n mu muᵀ cancels most."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return (rng.normal(size=(count, dim)) @ mixing + shift * rng.random(dim)).astype(dtype)


def _streamed(features, cuts):
    """Statistics of `features` fed in batches ending at `cuts`."""
    stats = FeatureStatistics(features.shape[1])
    for begin, end in zip([0, *cuts], [*cuts, len(features)]):
        stats.update(features[begin:end])
    return stats


def test_equals_np_mean_and_np_cov_of_the_stacked_features():
    """Within 1e-10 of the largest entry (issue 18's bound). Float64 sums of 3,000 rows carry ~1e-13 relative
    error; the cancellation in Σxxᵀ - n mu muᵀ costs log10((|mu|² + var) / var) ≈ 1 more digit here."""
    features = _features(0)
    stats = _streamed(features, [1, 64, 700, 2999])
    assert stats.count == 3000
    assert stats.mu().dtype == stats.sigma().dtype == np.float64
    expected_mu, expected_sigma = np.mean(features.astype(np.float64), axis=0), np.cov(features, rowvar=False)
    assert np.abs(stats.mu() - expected_mu).max() <= 1e-12 * np.abs(expected_mu).max()
    assert np.abs(stats.sigma() - expected_sigma).max() <= 1e-10 * np.abs(expected_sigma).max()
    # ddof = 1 (np.cov's, ADM's): the ddof = 0 covariance differs by n / (n - 1), far beyond the bound
    assert np.abs(stats.sigma() - np.cov(features, rowvar=False, ddof=0)).max() > 1e-5 * np.abs(expected_sigma).max()


def _batches(count, size=64):
    return list(range(size, count, size))


@pytest.mark.parametrize("bounds", [[0, 1472, 3000], [0, 64, 2048, 2048, 2112, 3000], [0, 64, 128, 192, 3000]])
def test_merging_shards_in_any_split_equals_one_pass(bounds):
    """Contiguous shards of whole batches of 64 (one of them empty), merged in either order: the same batches
    regrouped give bit for bit the sums of one pass, as torchrun's shares must; plain float64 sums do not."""
    features = _features(1)
    whole = _streamed(features, _batches(len(features)))
    parts = [_streamed(features[begin:end], _batches(end - begin)) for begin, end in zip(bounds, bounds[1:])]
    for order in (parts, parts[::-1]):
        merged = FeatureStatistics(features.shape[1])
        for part in order:
            merged.merge(part)
        assert merged.count == whole.count
        torch.testing.assert_close(merged.totals(), whole.totals(), rtol=0, atol=0)
        np.testing.assert_array_equal(merged.sigma(), whole.sigma())
    restored = FeatureStatistics.from_state(merged.state.clone())
    assert restored.dim == features.shape[1]
    np.testing.assert_array_equal(restored.sigma(), merged.sigma())

    # the same regrouping with plain float64 sums (no compensation) is not exact: what the pairs are for
    def plain(rows, cuts):
        total = torch.zeros(features.shape[1] ** 2, dtype=torch.float64)
        for begin, end in zip([0, *cuts], [*cuts, len(rows)]):
            x = torch.from_numpy(rows[begin:end]).double()
            total += (x.T @ x).flatten()
        return total
    one_pass = plain(features, _batches(len(features)))
    regrouped = sum(plain(features[begin:end], _batches(end - begin)) for begin, end in zip(bounds, bounds[1:]))
    assert not torch.equal(one_pass, regrouped)


def test_saved_sums_load_back_to_the_same_statistics(tmp_path):
    stats = _streamed(_features(5, count=200, dim=12), [64, 128])
    stats.save(tmp_path / "pool3.stats.npy")
    loaded = FeatureStatistics.load(tmp_path / "pool3.stats.npy", 12)
    assert loaded.count == 200
    np.testing.assert_array_equal(loaded.mu(), stats.mu())
    np.testing.assert_array_equal(loaded.sigma(), stats.sigma())
    with pytest.raises(ImageNetEvalError, match="not the 183 float64 sums of 13-d statistics"):
        FeatureStatistics.load(tmp_path / "pool3.stats.npy", 13)


def test_fd_from_streamed_statistics_equals_todays_fd_path():
    """Float64 features: both paths compute the same float64 quantities, agreement to rounding (1e-10). Float32
    features: today's path keeps ADM's float32 mean (about 1e-7 relative error), so within 1e-6 as the Fréchet
    routes are held to."""
    for dtype, tolerance in ((np.float64, 1e-10), (np.float32, 1e-6)):
        a, b = _features(2, dtype=dtype), _features(3, shift=3.2, dtype=dtype)
        today = frechet_distance(*fid_statistics(a), *fid_statistics(b))
        stream_a, stream_b = _streamed(a, [100, 1000]), _streamed(b, [7])
        streamed = frechet_distance(stream_a.mu(), stream_a.sigma(), stream_b.mu(), stream_b.sigma())
        assert today > 1.0 and abs(streamed - today) <= tolerance * today, (dtype, today, streamed)


def test_rejects_wrong_shapes_and_too_few_images():
    stats = FeatureStatistics(4)
    with pytest.raises(ImageNetEvalError, match="4-d features"):
        stats.update(np.zeros((3, 5)))
    with pytest.raises(ImageNetEvalError, match="at least 1 image"):
        stats.mu()
    with pytest.raises(ImageNetEvalError, match="at least 2 images"):
        stats.update(np.ones((1, 4))).sigma()
    with pytest.raises(ImageNetEvalError, match="merge 3-d"):
        stats.merge(FeatureStatistics(3))
    with pytest.raises(ImageNetEvalError, match="2 x 21 float64 values"):
        FeatureStatistics(4, state=torch.zeros(2, 21, dtype=torch.float32))


def _rank(rank, world, init_file, features, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    begin, end = (0, 64 * 3) if rank == 0 else (64 * 3, len(features))
    stats = _streamed(features[begin:end], _batches(end - begin)).gather_merge()
    torch.save(stats.totals(), out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_processes_give_the_one_process_statistics(tmp_path):
    """EDM2's scheme with exact addition: every rank sums its share of whole batches, the ranks' sums are gathered
    and added in rank order, and every rank holds the float64 sums one process computes over all batches."""
    features = _features(4, count=301, dim=16)
    mp.spawn(_rank, args=(2, tmp_path / "init", features, tmp_path), nprocs=2)
    one_process = _streamed(features, _batches(len(features)))
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), one_process.totals(), rtol=0, atol=0)
