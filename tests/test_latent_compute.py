"""Matched-compute bookkeeping: conventions, known totals, and agreement with the project's FLOP counter."""
import pytest
import torch
import torch.nn as nn

from pixeldit.compute import model_evaluations, sampling_flops
from pixeldit.models import PixelDiT, model_config
from pixeldit.models.autoencoder import DIGITS_AE_CONFIG
from pixeldit.models.flops import (
    count_flops,
    decoder_flops,
    forward_flops,
    matched_kimg,
    model_forward_flops,
    training_flops,
)
from pixeldit.samplers import Sampler


def test_generic_counter_agrees_with_project_counter():
    config = model_config("PixelDiT-T/4")
    with torch.device("meta"):
        net = PixelDiT(config)
        counted = forward_flops(net, torch.empty(1, 3, 32, 32), torch.empty(1), torch.zeros(1, dtype=torch.long))
    assert counted == count_flops(config, 32)


def test_conv_and_linear_counts_by_hand():
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.Flatten(),
                            nn.Linear(8 * 4 * 4, 5))
        flops = forward_flops(net, torch.empty(2, 3, 4, 4))
    assert flops == 2 * (2 * 8 * 16 * 3 * 9) + 2 * (2 * 8 * 16 * 2 * 9) + 2 * (2 * 128 * 5)


def test_dit_xl_forward_is_twice_dits_published_macs():
    # DiT reports 118.6 "Gflops" (multiply-adds) for DiT-XL/2 at 256²; this convention counts 2 per MAC.
    assert model_forward_flops("DiT-XL/2", 256) / 2e9 == pytest.approx(118.6, abs=0.05)


def test_model_evaluations_follow_the_sampler():
    assert model_evaluations(Sampler("euler", 10)) == 10
    assert model_evaluations(Sampler("euler", 10, cfg_scale=2.0)) == 19      # t = 0 is outside (0, 1): unguided
    assert model_evaluations(Sampler("heun-exact", 10)) == 19
    interval = Sampler("euler", 10, cfg_scale=2.0, cfg_min=0.45, cfg_max=1.0)  # guided at t = 0.5 .. 0.9
    assert model_evaluations(interval) == 15


def test_training_sampling_and_matched_compute_arithmetic():
    forward = model_forward_flops("LatentDiT-S/1", 32)
    assert training_flops("LatentDiT-S/1", 32, kimg=2.5) == 3 * forward * 2500
    sampler = Sampler("euler", 10, cfg_scale=2.0)
    decode = decoder_flops(DIGITS_AE_CONFIG, 32)
    assert decode > 0
    assert sampling_flops("LatentDiT-S/1", sampler, 32, decoder=DIGITS_AE_CONFIG) == 19 * forward + decode
    assert sampling_flops("PixelDiT-S/4", sampler, 32) == 19 * count_flops("PixelDiT-S/4", 32)
    with pytest.raises(ValueError, match="decoder"):
        sampling_flops("LatentDiT-S/1", sampler, 32)

    pixel = training_flops("PixelDiT-S/4", 32, kimg=100)
    kimg = matched_kimg(pixel, "LatentDiT-S/1", 32)
    assert training_flops("LatentDiT-S/1", 32, kimg) == pytest.approx(pixel, rel=1e-12)
    assert kimg == pytest.approx(100 * count_flops("PixelDiT-S/4", 32) / forward)


def test_latent_size_follows_resolution():
    assert model_forward_flops("DiT-S/2", 512) > 4 * model_forward_flops("DiT-S/2", 256)   # 4x tokens + N² attention
    with pytest.raises(ValueError, match="not divisible"):
        model_forward_flops("DiT-S/2", 200)
