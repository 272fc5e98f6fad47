"""Latent baseline end to end: autoencoder -> latent cache -> train() -> sample_shards() -> uint8 npz, exact resume,
guard rails, the matched-compute preset and the `latent` CLI."""
import shutil

import numpy as np
import pytest
import torch
from helpers import TINY_AE, random_autoencoder, write_tiny_digits
from safetensors.torch import load_file
from typer.testing import CliRunner

from pixeldit.cli.latent import app
from pixeldit.compute import compare_presets
from pixeldit.flow import VelocityFromPrediction
from pixeldit.models.autoencoder import load_autoencoder, save_autoencoder
from pixeldit.models.flops import matched_kimg, training_flops
from pixeldit.models.io import load_network, read_network_header, save_network
from pixeldit.sample import plan_sampling, sample_noise, sample_shards
from pixeldit.samplers import Sampler
from pixeldit.train import TrainConfig, train
from pixeldit.train_autoencoder import AUTOENCODER_PRESETS

runner = CliRunner()
SAMPLER = Sampler("euler", 2, cfg_scale=2.0)
TINY_DIT = dict(depth=2, hidden_size=32, num_heads=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two cores are shared by parallel test runs; one thread avoids oversubscription and keeps kernels fixed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def latent_config(work, **overrides):
    values = dict(dataset=str(work / "digits"), latent={"cache": str(work / "cache"), "autoencoder": str(work / "ae")},
                  model_overrides=TINY_DIT, batch_size=16, total_kimg=1, snapshot_kimg=1, state_kimg=1, log_every=4,
                  deterministic=True)
    return TrainConfig.from_preset("digits32-latent-s1", **{**values, **overrides})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny autoencoder (1 kimg) and latent cache made through the CLI, and a tiny latent model trained 1 kimg."""
    work = tmp_path_factory.mktemp("latent")
    data = write_tiny_digits(work / "digits", train=32, reference=16)
    tiny = dict(kimg=1, batch_size=16, lr=1e-3, kl_weight=1e-6, reconstruction="l1", architecture=TINY_AE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(AUTOENCODER_PRESETS, "tiny", tiny)
        result = runner.invoke(app, ["train-ae", str(data), "--out", str(work / "ae"), "--preset", "tiny"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["cache", str(data), "--ae", str(work / "ae"), "--out", str(work / "cache"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    train(latent_config(work), work / "run", progress=False)
    return work


def test_latent_run_samples_uint8_images_of_the_image_resolution(work, tmp_path):
    snapshot = work / "run" / "network-snapshot-0000001.safetensors"
    config, metadata, _ = read_network_header(snapshot)
    assert metadata["family"] == "latent-dit" and metadata["resolution"] == 32
    autoencoder = load_autoencoder(work / "ae")
    assert metadata["latent"] == {"cache": str(work / "cache"), "autoencoder": str(work / "ae"),
                                  "autoencoder_fingerprint": autoencoder.fingerprint(), "latent_shape": [4, 8, 8]}

    result = sample_shards(snapshot, tmp_path, 10, SAMPLER, seed=3, shard_size=5, batch_size=5, merge=True)
    with np.load(result["merged"]) as npz:
        images, labels = npz["arr_0"], npz["arr_1"]
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(10) % 10)

    # Sample i = decode(sampler(noise of the latent shape from (seed, i))), with the recorded autoencoder.
    model, _ = load_network(snapshot)
    model = VelocityFromPrediction(model, metadata["prediction"])   # the latent preset predicts x (its network output)
    noise = sample_noise(3, range(5), (4, 8, 8))
    latents = SAMPLER.sample(model, noise, torch.arange(5), null_label=10)
    np.testing.assert_array_equal(images[:5], autoencoder.decode(latents))


def test_sampling_refuses_a_changed_autoencoder_and_another_resolution(work, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(work / "run", run)
    snapshot = run / "network-snapshot-0000001.safetensors"
    with pytest.raises(ValueError, match="latent grid is fixed"):
        plan_sampling(snapshot, 10, 5, resolution=64)
    # Point the snapshot's record at an autoencoder of other weights: decoding with it would be meaningless.
    other = tmp_path / "other-ae"
    save_autoencoder(other / "autoencoder.safetensors", random_autoencoder())
    model, metadata = load_network(snapshot, which="ema")
    save_network(snapshot, model.config, ema=model.state_dict(),
                 metadata={"resolution": 32, "latent": {**metadata["latent"], "autoencoder": str(other)}})
    with pytest.raises(ValueError, match="not the one the model was trained with"):
        sample_shards(snapshot, tmp_path / "samples", 10, SAMPLER, seed=0, shard_size=10)


def test_latent_resume_is_bit_identical(work, tmp_path):
    shutil.copytree(work / "run", tmp_path / "resumed")             # stopped at its 1 kimg state
    resumed = train(latent_config(work, total_kimg=2), tmp_path / "resumed", progress=False)
    straight = train(latent_config(work, total_kimg=2), tmp_path / "straight", progress=False)
    a, b = load_file(resumed), load_file(straight)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_bad_latent_configs_are_refused(work, tmp_path):
    with pytest.raises(ValueError, match="PixelDiT only"):
        latent_config(work, ablation="vanilla-dit")
    with pytest.raises(ValueError, match="PixelDiT only"):
        latent_config(work, repa={"encoder": "tiny-random", "align_layer": 1, "weight": 0.5})
    with pytest.raises(ValueError, match="needs a latent model"):
        latent_config(work, model="PixelDiT-T/4")
    with pytest.raises(ValueError, match="missing \\['cache'\\]"):
        latent_config(work, latent={"autoencoder": "sd-vae-ft-ema"})
    with pytest.raises(ValueError, match="works on autoencoder latents"):
        latent_config(work, latent=None)
    with pytest.raises(ValueError, match=r"holds latents \(4, 8, 8\)"):
        train(latent_config(work, model_overrides={**TINY_DIT, "input_size": 4}), tmp_path / "a", progress=False)
    other = tmp_path / "other-ae"
    save_autoencoder(other / "autoencoder.safetensors", random_autoencoder())
    with pytest.raises(ValueError, match="autoencoder"):
        train(latent_config(work, latent={"cache": str(work / "cache"), "autoencoder": str(other)}), tmp_path / "b",
              progress=False)


def test_latent_preset_is_compute_matched_to_the_pixel_preset():
    pixel, latent = TrainConfig.from_preset("digits32-s4"), TrainConfig.from_preset("digits32-latent-s1")
    matched = matched_kimg(training_flops(pixel.model, 32, pixel.total_kimg), latent.model, 32)
    assert latent.total_kimg == round(matched)
    comparison = compare_presets("digits32-s4", "digits32-latent-s1")
    assert comparison["matched_kimg"] == pytest.approx(matched)
    assert comparison["latent"]["training_flops"] == pytest.approx(comparison["pixel"]["training_flops"], rel=0.03)
    assert comparison["latent"]["decoder"] == "digits32-ae"

    result = runner.invoke(app, ["compute", "--pixel-preset", "digits32-s4", "--latent-preset", "digits32-latent-s1"])
    assert result.exit_code == 0, result.output
    assert f"{matched:.2f} kimg" in result.output
    result = runner.invoke(app, ["compute", "--latent-preset", "digits32-s4"])
    assert result.exit_code == 1 and "latent preset" in result.output


def test_cli_reconstruct_dry_run_and_bad_input(work, tmp_path):
    result = runner.invoke(app, ["reconstruct", str(work / "digits"), "--ae", str(work / "ae"),
                                 "--out", str(tmp_path / "recon.npz"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "recon.npz") as npz:
        assert npz["arr_0"].shape == (16, 32, 32, 3) and npz["arr_0"].dtype == np.uint8
    result = runner.invoke(app, ["train-ae", str(work / "digits"), "--out", str(tmp_path / "ae"), "--kimg", "2",
                                 "--dry-run"])
    assert result.exit_code == 0 and '"steps": 63' in result.output and not (tmp_path / "ae").exists()
    result = runner.invoke(app, ["cache", str(work / "digits"), "--ae", str(tmp_path / "missing"),
                                 "--out", str(tmp_path / "cache")])
    assert result.exit_code == 1 and "no autoencoder" in result.output
    result = runner.invoke(app, ["cache", str(work / "digits"), "--ae", str(work / "ae"), "--split", "nope",
                                 "--out", str(tmp_path / "cache")])
    assert result.exit_code == 1 and "no split" in result.output
    result = runner.invoke(app, ["train-ae", str(work / "digits"), "--out", str(tmp_path / "ae"), "--preset", "nope"])
    assert result.exit_code == 1 and "unknown autoencoder preset" in result.output
