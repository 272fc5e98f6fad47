"""FLOPs in the paper's convention (upstream tools/compute_flops.py): 2 FLOPs per multiply-add of every
Linear (and Conv2d, for autoencoders), plus 4·N²·C per self-attention over N tokens of width C. Counted by
forward hooks; on a meta-device model even XL at 512² costs no compute or memory."""
from __future__ import annotations

import torch
import torch.nn as nn

from pixeldit.models.layers import Attention
from pixeldit.models.pixeldit import PixelDiT, PixelDiTConfig, model_config


def _attention_counters() -> dict[type, callable]:
    """(module type -> (args, kwargs) -> (batch, tokens, width)) for every attention the project runs."""
    from pixeldit.models.t2i import MMDiTBlock

    def tokens_of(args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        # (B, N, C) tokens, or (B, C, H, W) feature maps that diffusers' processor flattens to tokens
        return (x.shape[0], x.shape[1]) if x.ndim == 3 else (x.shape[0], x.shape[2] * x.shape[3])

    counters = {
        Attention: lambda layer, args, kwargs: (*tokens_of(args, kwargs), layer.qkv.out_features // 3),
        # joint attention over [text ; image]: N = T + L (the block's two streams share one attention)
        MMDiTBlock: lambda layer, args, kwargs: (args[0].shape[0], args[0].shape[1] + args[1].shape[1], args[0].shape[2]),
    }
    try:
        from diffusers.models.attention_processor import Attention as DiffusersAttention
        counters[DiffusersAttention] = lambda layer, args, kwargs: (*tokens_of(args, kwargs), layer.to_q.out_features)
    except ImportError:  # diffusers is only needed for autoencoders
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


def count_flops(model: str | PixelDiTConfig, height: int, width: int | None = None, **overrides) -> int:
    """FLOPs of one PixelDiT forward pass for one image of height x width (one NFE, no CFG doubling)."""
    config = model_config(model, **overrides)
    with torch.device("meta"):
        net = PixelDiT(config)
        return forward_flops(net, torch.empty(1, config.in_channels, height, width or height), torch.empty(1),
                             torch.zeros(1, dtype=torch.long))


def count_params(model: str | PixelDiTConfig, **overrides) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in PixelDiT(model_config(model, **overrides)).parameters())
