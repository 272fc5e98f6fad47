"""Compute bookkeeping, so the report can plot FID against compute for latent and pixel models alike.

Conventions (PixelDiT's, as `pixeldit.models.flops.count_flops`): 2 FLOPs per multiply-add of every Linear
and Conv2d, plus 4·N²·C per self-attention over N tokens of width C (QKᵀ and AV); norms, activations and
biases are not counted. Counted by forward hooks on meta-device models, so nothing is computed.

- Training: 3 x forward FLOPs per image (backward ≈ 2 x forward: gradients of activations and of weights)
  x images seen. Latents are cached, so the encoder is a one-off cost of one forward per training image
  (`encoder_flops`), not part of `training_flops`.
- Sampling, per image: every model evaluation of the sampler, a guided one counting twice (conditional +
  unconditional batch), plus one decoder pass for a latent model.
- DiT's own "118.6 Gflops" for DiT-XL/2 counts multiply-adds of Linears only; the numbers here are in the
  2-FLOPs-per-MAC convention of PixelDiT's 311 GFLOPs.
"""
from __future__ import annotations

import dataclasses

import torch

from pixeldit.latent.ae_training import AUTOENCODER_PRESETS
from pixeldit.latent.autoencoder import SD_VAE, SD_VAE_CONFIG, LatentAutoencoder, architecture_of, build_vae
from pixeldit.models.flops import count_flops, forward_flops
from pixeldit.models.latent_dit import LatentDiT, LatentDiT_models, LatentDiTConfig, latent_model_config
from pixeldit.models.pixeldit import PixelDiT_models, PixelDiTConfig, model_config
from pixeldit.samplers import Sampler, get_sampler

TRAINING_PASSES = 3   # forward + backward ≈ 3 forwards


def resolve_model(model: str | PixelDiTConfig | LatentDiTConfig) -> PixelDiTConfig | LatentDiTConfig:
    """A config from either registry (latent names: DiT-XL/2, SiT-XL/2, ...; pixel names: PixelDiT-XL/16, ...)."""
    if not isinstance(model, str):
        return model
    if model in LatentDiT_models:
        return LatentDiT_models[model]
    if model in PixelDiT_models:
        return PixelDiT_models[model]
    raise KeyError(f"unknown model {model!r}; latent: {', '.join(LatentDiT_models)}; pixel: {', '.join(PixelDiT_models)}")


def latent_config_at(config: LatentDiTConfig, resolution: int) -> LatentDiTConfig:
    """The latent model sized for images of `resolution` (e.g. DiT-XL/2 at 512² works on 64x64 latents)."""
    factor = config.autoencoder_downsample
    if resolution % (factor * config.patch_size):
        raise ValueError(f"{resolution}px images are not divisible into {config.name or 'latent model'} patches "
                         f"(autoencoder factor {factor} x patch {config.patch_size})")
    return dataclasses.replace(config, input_size=resolution // factor)


def model_forward_flops(model: str | PixelDiTConfig | LatentDiTConfig, resolution: int) -> int:
    """FLOPs of one forward pass (one image, one NFE, no CFG) of a pixel or latent model at image `resolution`."""
    config = resolve_model(model)
    if isinstance(config, PixelDiTConfig):
        return count_flops(config, resolution)
    config = latent_config_at(config, resolution)
    with torch.device("meta"):
        net = LatentDiT(config)
        x = torch.empty(1, config.in_channels, config.input_size, config.input_size)
        return forward_flops(net, x, torch.empty(1), torch.zeros(1, dtype=torch.long))


def training_flops(model: str | PixelDiTConfig | LatentDiTConfig, resolution: int, kimg: float) -> float:
    """Training FLOPs for `kimg` thousand images: 3 x forward FLOPs per image (encoder excluded: latents are cached)."""
    return TRAINING_PASSES * model_forward_flops(model, resolution) * kimg * 1000


def matched_kimg(pixel_training_flops: float, latent_model: str | LatentDiTConfig, resolution: int) -> float:
    """Images (in thousands) a latent model must train on to spend `pixel_training_flops`, e.g.
    matched_kimg(training_flops("PixelDiT-XL/16", 256, 1000), "DiT-XL/2", 256)."""
    return pixel_training_flops / (TRAINING_PASSES * model_forward_flops(latent_model, resolution) * 1000)


def _architecture(autoencoder: LatentAutoencoder | dict | str) -> dict:
    if isinstance(autoencoder, LatentAutoencoder):
        return architecture_of(autoencoder.vae)
    if autoencoder == SD_VAE:
        return SD_VAE_CONFIG
    if isinstance(autoencoder, dict):
        return autoencoder
    if autoencoder in AUTOENCODER_PRESETS:
        return AUTOENCODER_PRESETS[autoencoder]["architecture"]
    raise TypeError(f"expected a LatentAutoencoder, an AutoencoderKL config dict, {SD_VAE!r} or an autoencoder preset "
                    f"({', '.join(AUTOENCODER_PRESETS)}), got {autoencoder!r}")


def _autoencoder_flops(autoencoder: LatentAutoencoder | dict | str, resolution: int, part: str) -> int:
    config = _architecture(autoencoder)
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    if resolution % factor:
        raise ValueError(f"{resolution}px is not divisible by the autoencoder's factor {factor}")
    with torch.device("meta"):
        vae = build_vae(config)
        if part == "decoder":
            z = torch.empty(1, config["latent_channels"], resolution // factor, resolution // factor)
            return forward_flops(vae.decoder, z) + forward_flops(vae.post_quant_conv, z)
        x = torch.empty(1, config["in_channels"], resolution, resolution)
        h = vae.encoder(x)
        return forward_flops(vae.encoder, x) + forward_flops(vae.quant_conv, h)


def decoder_flops(autoencoder: LatentAutoencoder | dict | str, resolution: int) -> int:
    """FLOPs of decoding one latent into a `resolution`² image (post-quant conv + decoder)."""
    return _autoencoder_flops(autoencoder, resolution, "decoder")


def encoder_flops(autoencoder: LatentAutoencoder | dict | str, resolution: int) -> int:
    """FLOPs of encoding one `resolution`² image (encoder + quant conv): the one-off cost of caching."""
    return _autoencoder_flops(autoencoder, resolution, "encoder")


def model_evaluations(sampler: Sampler) -> int:
    """Forward passes per image, a guided one counting twice: the sampler is run on a 1-element dummy
    trajectory, so CFG intervals and Heun's reused evaluations count exactly as in real sampling."""
    batch_sizes = []

    def counting_model(x, t, y):
        batch_sizes.append(x.shape[0])
        return torch.zeros_like(x)

    sampler.sample(counting_model, torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long), null_label=1)
    return sum(batch_sizes)


def sampling_flops(model: str | PixelDiTConfig | LatentDiTConfig, sampler: Sampler | str, resolution: int,
                   decoder: LatentAutoencoder | dict | str | None = None) -> float:
    """Per-image sampling FLOPs: model evaluations (the sampler's steps, doubled where CFG is on) x forward
    FLOPs, plus one decoder pass when `decoder` is given (required for latent models)."""
    sampler = get_sampler(sampler) if isinstance(sampler, str) else sampler
    config = resolve_model(model)
    if isinstance(config, LatentDiTConfig) and decoder is None:
        raise ValueError(f"{config.name or 'a latent model'} produces latents: pass its decoder "
                         f"(e.g. {config.autoencoder!r}) so sampling compute includes decoding")
    total = model_evaluations(sampler) * model_forward_flops(config, resolution)
    return total + (decoder_flops(decoder, resolution) if decoder is not None else 0)


def compare_presets(pixel_preset: str, latent_preset: str, sampler: str = "ab2-50-cfg") -> dict:
    """Training FLOPs and per-image sampling FLOPs of a pixel and a latent training preset, and the latent
    budget (kimg) that spends the pixel preset's training compute. The latent model's decoder is the
    autoencoder its registry entry names (`sd-vae-ft-ema` or an autoencoder preset such as `digits32-ae`)."""
    from pixeldit.presets import get_preset

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
    latent_model = latent_model_config(latent["model"], **latent.get("model_overrides", {}))
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
