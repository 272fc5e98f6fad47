"""Autoencoder wrapper (scaling, shapes, quantisation, offline SD VAE), small-AE training and resume, rFID."""
import numpy as np
import pytest
import torch
from helpers import TINY_AE, random_autoencoder, write_tiny_digits

from pixeldit.data import open_dataset
from pixeldit.infra.weights import MissingWeightsError
from pixeldit.models.autoencoder import (
    SD_VAE,
    SD_VAE_SCALE,
    load_autoencoder,
    reconstruct,
    save_autoencoder,
)
from pixeldit.train_autoencoder import STATE_NAME, train_autoencoder


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    return write_tiny_digits(tmp_path_factory.mktemp("data") / "digits")


def test_encode_decode_shapes_and_scaling():
    ae = random_autoencoder(shift=0.5, scale=SD_VAE_SCALE)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    mean = ae.vae.encode(x).latent_dist.mean
    z = ae.encode(images, sample=False)
    assert z.shape == (3, 4, 8, 8) and ae.downsample == 4
    torch.testing.assert_close(z, (mean - 0.5) * SD_VAE_SCALE)            # latent = (z - shift) * scale
    decoded = ae.decode(z)
    assert decoded.shape == (3, 32, 32, 3) and decoded.dtype == np.uint8
    raw = ae.vae.decode(mean).sample                                        # decode undoes the scaling
    expected = ((raw + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(decoded, expected)


def test_posterior_sample_depends_on_index_not_batch():
    ae = random_autoencoder()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    whole = ae.encode(images, indices=[10, 11, 12, 13])
    halves = torch.cat([ae.encode(images[:2], indices=[10, 11]), ae.encode(images[2:], indices=[12, 13])])
    torch.testing.assert_close(whole, halves)
    assert not torch.allclose(whole, ae.encode(images, indices=[20, 21, 22, 23]))
    assert not torch.allclose(whole, ae.encode(images, sample=False))


def test_bad_input_is_refused():
    ae = random_autoencoder()
    with pytest.raises(ValueError, match="uint8 images"):
        ae.encode(np.zeros((1, 3, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="not divisible"):
        ae.encode(np.zeros((1, 30, 30, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="decode expects"):
        ae.decode(torch.zeros(1, 3, 8, 8))


def test_sd_vae_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=f"pixeldit-bench weights fetch {SD_VAE}"):
        load_autoencoder(SD_VAE)


def test_save_load_round_trip_and_fingerprint(tmp_path):
    ae = random_autoencoder(shift=0.25, scale=2.0)
    path = save_autoencoder(tmp_path / "ae.safetensors", ae, metadata={"note": "x"})
    loaded = load_autoencoder(path)
    assert loaded.fingerprint() == ae.fingerprint()
    torch.testing.assert_close(loaded.shift, ae.shift)
    assert random_autoencoder(shift=0.25, scale=2.1).fingerprint() != ae.fingerprint()


def test_reconstruct_writes_adm_npz(tiny_digits, tmp_path):
    ae = random_autoencoder()
    dataset = open_dataset(tiny_digits, "reference")
    images = reconstruct(ae, dataset, batch_size=5, out=tmp_path / "recon.npz")
    assert images.shape == (16, 32, 32, 3) and images.dtype == np.uint8
    with np.load(tmp_path / "recon.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"], images)
        np.testing.assert_array_equal(npz["arr_1"], dataset.labels)
    np.testing.assert_array_equal(images[:5], ae.decode(ae.encode(dataset.get_batch(range(5))[0], sample=False)))


def test_train_autoencoder_smoke_resume_and_statistics(tiny_digits, tmp_path):
    settings = dict(batch_size=8, state_every=2, architecture=TINY_AE)
    train_autoencoder(tiny_digits, tmp_path / "resumed", kimg=0.016, **settings)       # 2 steps, then "killed"
    assert (tmp_path / "resumed" / STATE_NAME).exists()
    resumed = load_autoencoder(train_autoencoder(tiny_digits, tmp_path / "resumed", kimg=0.032, **settings))
    straight = load_autoencoder(train_autoencoder(tiny_digits, tmp_path / "straight", kimg=0.032, **settings))
    assert resumed.fingerprint() == straight.fingerprint()                 # bit-identical continuation
    history = torch.load(tmp_path / "straight" / STATE_NAME, weights_only=True)["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(np.isfinite(h["rec_loss"]) for h in history)

    # The stored scaling normalises the training split's latents per channel.
    latents = straight.encode(open_dataset(tiny_digits, "train").all_images(), indices=range(32))
    torch.testing.assert_close(latents.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(latents.std(dim=(0, 2, 3), correction=0), torch.ones(4), atol=1e-4, rtol=0)

    with pytest.raises(ValueError, match="other settings"):
        train_autoencoder(tiny_digits, tmp_path / "straight", kimg=0.032, **{**settings, "lr": 5e-4})
