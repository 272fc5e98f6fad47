"""Latent cache: resume after a crash is byte-identical, another autoencoder is refused, loader compatibility."""
import json

import numpy as np
import pytest
import torch
from helpers import random_autoencoder, write_tiny_digits

from pixeldit.data import ImageBatches, open_dataset
from pixeldit.data.latent_cache import MANIFEST_NAME, CacheMismatchError, cache_latents, open_latent_cache
from pixeldit.models.autoencoder import LatentAutoencoder


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    return write_tiny_digits(tmp_path_factory.mktemp("data") / "digits", train=40, reference=10)


class Crash(RuntimeError):
    pass


class CrashingAutoencoder(LatentAutoencoder):
    """The same autoencoder (same fingerprint) that dies at its n-th encode call, like a killed job."""

    def __init__(self, source: LatentAutoencoder, crash_at_call: int):
        super().__init__(source.vae, source.shift, source.scale, source.name)
        self.calls, self.crash_at_call = 0, crash_at_call

    def encode(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.crash_at_call:
            raise Crash("killed")
        return super().encode(*args, **kwargs)


def directory_bytes(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != MANIFEST_NAME}


def test_killed_cache_resumes_to_identical_result(tiny_digits, tmp_path):
    ae = random_autoencoder()
    settings = dict(chunk_size=16, batch_size=8, seed=3)       # 40 images: shards of 16, 16, 8
    straight = cache_latents(tiny_digits, "train", ae, tmp_path / "straight", **settings)

    with pytest.raises(Crash):                                  # dies inside the third shard
        cache_latents(tiny_digits, "train", CrashingAutoencoder(ae, crash_at_call=5), tmp_path / "resumed", **settings)
    partial = json.loads((tmp_path / "resumed" / MANIFEST_NAME).read_text())
    assert [s["file"] for s in partial["shards"]] == ["latents-00000.npy", "latents-00001.npy"]
    assert not partial["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        open_latent_cache(tmp_path / "resumed")
    (tmp_path / "resumed" / ".latents-00002.npy.abc").write_bytes(b"half a shard")   # a SIGKILL leftover

    resumed = cache_latents(tiny_digits, "train", ae, tmp_path / "resumed", **settings)
    assert directory_bytes(resumed) == directory_bytes(straight)

    dataset = open_latent_cache(resumed, ae)
    assert len(dataset) == 40 and dataset.latent_shape == (4, 8, 8) and dataset.resolution == 32
    images, labels = open_dataset(tiny_digits, "train").get_batch([0, 17, 39])
    latents, cached_labels = dataset.get_batch([0, 17, 39])
    expected = ae.encode(images, indices=[0, 17, 39], seed=3).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(latents, expected, rtol=0, atol=1e-5)   # CPU kernels vary with batch composition
    np.testing.assert_array_equal(cached_labels, labels)


def test_other_autoencoder_is_refused(tiny_digits, tmp_path):
    ae = random_autoencoder()
    cache_latents(tiny_digits, "reference", ae, tmp_path / "cache", chunk_size=8)
    other = random_autoencoder(scale=0.5)
    with pytest.raises(CacheMismatchError, match="autoencoder"):
        cache_latents(tiny_digits, "reference", other, tmp_path / "cache", chunk_size=8)
    with pytest.raises(CacheMismatchError, match="autoencoder"):
        open_latent_cache(tmp_path / "cache", other)
    with pytest.raises(CacheMismatchError, match="chunk_size"):
        cache_latents(tiny_digits, "reference", ae, tmp_path / "cache", chunk_size=4)
    with pytest.raises(CacheMismatchError, match="dataset"):
        cache_latents(tiny_digits, "train", ae, tmp_path / "cache", chunk_size=8)


def test_training_loader_draws_latent_batches(tiny_digits, tmp_path):
    ae = random_autoencoder()
    dataset = open_latent_cache(cache_latents(tiny_digits, "train", ae, tmp_path / "cache", chunk_size=16))
    latents, labels = next(ImageBatches(dataset, batch_size=8, seed=0))
    assert latents.shape == (8, 4, 8, 8) and latents.dtype == torch.float32 and labels.shape == (8,)
    with pytest.raises(IndexError):
        dataset.get_batch([40])
