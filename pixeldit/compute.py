"""Compute bookkeeping that needs samplers and training presets, so the report can plot FID against compute
for latent and pixel models alike (FLOP conventions: `pixeldit.models.flops`).

    sampling_flops(model, sampler, resolution, decoder)   per-image sampling FLOPs
    compare_presets(pixel_preset, latent_preset)          training / sampling FLOPs of two presets, matched kimg
"""
from __future__ import annotations

import torch

from pixeldit.models.autoencoder import LatentAutoencoder
from pixeldit.models.flops import decoder_flops, matched_kimg, model_forward_flops, training_flops
from pixeldit.models.registry import ModelConfig, family_of, model_config
from pixeldit.presets import get_preset
from pixeldit.samplers import Sampler, get_sampler


def model_evaluations(sampler: Sampler) -> int:
    """Forward passes per image, a guided one counting twice: the sampler is run on a 1-element dummy
    trajectory, so CFG intervals and Heun's reused evaluations count exactly as in real sampling."""
    batch_sizes = []

    def counting_model(x, t, y):
        batch_sizes.append(x.shape[0])
        return torch.zeros_like(x)

    sampler.sample(counting_model, torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long), null_label=1)
    return sum(batch_sizes)


def sampling_flops(model: str | ModelConfig, sampler: Sampler | str, resolution: int,
                   decoder: LatentAutoencoder | dict | str | None = None) -> float:
    """Per-image sampling FLOPs: model evaluations (the sampler's steps, doubled where CFG is on) x forward
    FLOPs, plus one decoder pass when `decoder` is given (required for latent models)."""
    sampler = get_sampler(sampler) if isinstance(sampler, str) else sampler
    config = model_config(model)
    if family_of(config) == "latent-dit" and decoder is None:
        raise ValueError(f"{config.name or 'a latent model'} produces latents: pass its decoder "
                         f"(e.g. {config.autoencoder!r}) so sampling compute includes decoding")
    total = model_evaluations(sampler) * model_forward_flops(config, resolution)
    return total + (decoder_flops(decoder, resolution) if decoder is not None else 0)


def compare_presets(pixel_preset: str, latent_preset: str, sampler: str = "ab2-50-cfg") -> dict:
    """Training FLOPs and per-image sampling FLOPs of a pixel and a latent training preset, and the latent
    budget (kimg) that spends the pixel preset's training compute. The latent model's decoder is the
    autoencoder its registry entry names (`sd-vae-ft-ema` or an autoencoder preset such as `digits32-ae`)."""
    pixel, latent = get_preset(pixel_preset), get_preset(latent_preset)
    if pixel.get("latent") or not latent.get("latent"):
        raise ValueError(f"need a pixel preset and a latent preset, got {pixel_preset!r} "
                         f"({'latent' if pixel.get('latent') else 'pixel'}) and {latent_preset!r} "
                         f"({'latent' if latent.get('latent') else 'pixel'})")
    if pixel["resolution"] != latent["resolution"]:
        raise ValueError(f"{pixel_preset} trains at {pixel['resolution']}px but {latent_preset} at "
                         f"{latent['resolution']}px; compare presets of one resolution")
    resolution = pixel["resolution"]
    pixel_model = model_config(pixel["model"], pixel.get("ablation"), **pixel.get("model_overrides", {}))
    latent_model = model_config(latent["model"], **latent.get("model_overrides", {}))
    pixel_training = training_flops(pixel_model, resolution, pixel["total_kimg"])
    return {
        "resolution": resolution, "sampler": sampler,
        "pixel": {"preset": pixel_preset, "model": pixel["model"], "kimg": pixel["total_kimg"],
                  "training_flops": pixel_training,
                  "sampling_flops_per_image": sampling_flops(pixel_model, sampler, resolution)},
        "latent": {"preset": latent_preset, "model": latent["model"], "kimg": latent["total_kimg"],
                   "training_flops": training_flops(latent_model, resolution, latent["total_kimg"]),
                   "sampling_flops_per_image": sampling_flops(latent_model, sampler, resolution,
                                                              decoder=latent_model.autoencoder),
                   "decoder": latent_model.autoencoder},
        "matched_kimg": matched_kimg(pixel_training, latent_model, resolution),
    }
