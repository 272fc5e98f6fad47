"""FLOPs of every model family and of the autoencoders, in the paper's convention (upstream tools/compute_flops.py).

2 FLOPs per multiply-add of every Linear and Conv2d, plus 4·N²·C per self-attention over N tokens of width C
(QKᵀ and AV); norms, activations and biases are not counted. Counted by forward hooks on meta-device models,
so even XL at 512² costs no compute or memory.

- Training: 3 x forward FLOPs per image (backward ≈ 2 x forward: gradients of activations and of weights)
  x images seen. Latents are cached, so the encoder is a one-off cost of one forward per training image
  (`encoder_flops`), not part of `training_flops`.
- Sampling (`pixeldit.compute.sampling_flops`): every model evaluation of the sampler, a guided one counting
  twice, plus one decoder pass for a latent model.
- DiT's own "118.6 Gflops" for DiT-XL/2 counts multiply-adds of Linears only; the numbers here are in the
  2-FLOPs-per-MAC convention of PixelDiT's 311 GFLOPs.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from pixeldit.models.autoencoder import LatentAutoencoder, autoencoder_architecture, build_vae
from pixeldit.models.latent_dit import LatentDiTConfig
from pixeldit.models.layers import Attention
from pixeldit.models.registry import ModelConfig, build_network, family_of, model_config
from pixeldit.models.t2i import MMDiTBlock

TRAINING_PASSES = 3   # forward + backward ≈ 3 forwards


def _tokens_of(args, kwargs) -> tuple[int, int]:
    """(batch, tokens) of an attention input: (B, N, C) tokens, or (B, C, H, W) maps diffusers flattens."""
    x = args[0] if args else kwargs["hidden_states"]
    return (x.shape[0], x.shape[1]) if x.ndim == 3 else (x.shape[0], x.shape[2] * x.shape[3])


def _attention_counters() -> dict[type, callable]:
    """(module type -> (layer, args, kwargs) -> (batch, tokens, width)) for every attention the project runs."""
    counters = {
        Attention: lambda layer, args, kwargs: (*_tokens_of(args, kwargs), layer.qkv.out_features // 3),
        # joint attention over [text ; image]: N = T + L (the block's two streams share one attention)
        MMDiTBlock: lambda layer, args, kwargs: (args[0].shape[0], args[0].shape[1] + args[1].shape[1],
                                                 args[0].shape[2]),
    }
    try:  # lazy: diffusers is optional (the `latent` extra), needed only for autoencoders
        from diffusers.models.attention_processor import Attention as DiffusersAttention
        counters[DiffusersAttention] = lambda layer, args, kwargs: (*_tokens_of(args, kwargs),
                                                                    layer.to_q.out_features)
    except ImportError:
        pass
    return counters


def forward_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one call module(*inputs), counted by hooks (removed afterwards)."""
    total = 0
    counters = _attention_counters()

    def linear_hook(layer: nn.Linear, args, _output):
        nonlocal total
        total += 2 * (args[0].numel() // layer.in_features) * layer.in_features * layer.out_features

    def conv_hook(layer: nn.Conv2d, _args, output):
        nonlocal total
        kernel_h, kernel_w = layer.kernel_size
        total += 2 * output.numel() * (layer.in_channels // layer.groups) * kernel_h * kernel_w

    def attention_hook(layer: nn.Module, args, kwargs):
        nonlocal total
        batch, tokens, width = counters[type(layer)](layer, args, kwargs)
        total += 4 * batch * tokens * tokens * width

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
        elif isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(conv_hook))
        elif type(layer) in counters:
            handles.append(layer.register_forward_pre_hook(attention_hook, with_kwargs=True))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def _example_inputs(config: ModelConfig, height: int, width: int, text_length: int | None) -> tuple[torch.Tensor, ...]:
    """One sample's (x, t, condition) for a forward pass, on the current (meta) device."""
    x, t = torch.empty(1, config.in_channels, height, width), torch.empty(1)
    if family_of(config) == "pixeldit-t2i":
        return x, t, torch.empty(1, text_length or config.text_max_length, config.text_dim)
    return x, t, torch.zeros(1, dtype=torch.long)


def count_flops(model: str | ModelConfig, height: int, width: int | None = None, *, text_length: int | None = None,
                **overrides) -> int:
    """FLOPs of one forward pass (one NFE, no CFG doubling) of any registry model or config for one input of
    height x width: pixels, or the latent grid of a latent model. A T2I model's joint attention sees
    `text_length` text tokens (default text_max_length, the length the text encoder pads to). `overrides`
    are `model_config`'s (ablation=..., fields)."""
    config = model_config(model, **overrides)
    with torch.device("meta"):
        return forward_flops(build_network(config), *_example_inputs(config, height, width or height, text_length))


def count_params(model: str | ModelConfig, **overrides) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_network(model, **overrides).parameters())


def latent_config_at(config: LatentDiTConfig, resolution: int) -> LatentDiTConfig:
    """The latent model sized for images of `resolution` (e.g. DiT-XL/2 at 512² works on 64x64 latents)."""
    factor = config.autoencoder_downsample
    if resolution % (factor * config.patch_size):
        raise ValueError(f"{resolution}px images are not divisible into {config.name or 'latent model'} patches "
                         f"(autoencoder factor {factor} x patch {config.patch_size})")
    return dataclasses.replace(config, input_size=resolution // factor)


def model_forward_flops(model: str | ModelConfig, resolution: int) -> int:
    """FLOPs of one forward pass (one image, one NFE, no CFG) of any model for images of `resolution`²."""
    config = model_config(model)
    if family_of(config) == "latent-dit":
        config = latent_config_at(config, resolution)
        return count_flops(config, config.input_size)
    return count_flops(config, resolution)


def training_flops(model: str | ModelConfig, resolution: int, kimg: float) -> float:
    """Training FLOPs for `kimg` thousand images: 3 x forward FLOPs per image (encoder excluded: latents are cached)."""
    return TRAINING_PASSES * model_forward_flops(model, resolution) * kimg * 1000


def matched_kimg(training_budget_flops: float, model: str | ModelConfig, resolution: int) -> float:
    """Images (in thousands) `model` must train on to spend `training_budget_flops`, e.g. the latent budget of a
    pixel run: matched_kimg(training_flops("PixelDiT-XL/16", 256, 1000), "DiT-XL/2", 256)."""
    return training_budget_flops / (TRAINING_PASSES * model_forward_flops(model, resolution) * 1000)


def _autoencoder_flops(autoencoder: LatentAutoencoder | dict | str, resolution: int, part: str) -> int:
    config = autoencoder_architecture(autoencoder)
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
