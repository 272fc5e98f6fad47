"""FLOPs in the paper's convention (upstream tools/compute_flops.py): 2 FLOPs per multiply-add of every
Linear, plus 4·N²·C per self-attention over N tokens of width C. Counted by forward hooks on a meta-device
model, so even XL at 512² costs no compute or memory."""
from __future__ import annotations

import torch
import torch.nn as nn

from pixeldit.models.layers import Attention
from pixeldit.models.pixeldit import PixelDiT, PixelDiTConfig, model_config


def count_flops(model: str | PixelDiTConfig, height: int, width: int | None = None, **overrides) -> int:
    """FLOPs of one forward pass for one image of height x width (one NFE, no CFG doubling)."""
    width = width or height
    config = model_config(model, **overrides)
    total = 0

    def linear_hook(module: nn.Linear, inputs, _output):
        nonlocal total
        tokens = inputs[0].numel() // inputs[0].shape[-1]
        total += 2 * tokens * module.in_features * module.out_features

    def attention_hook(_module: Attention, inputs):
        nonlocal total
        batch, tokens, width_ = inputs[0].shape
        total += 4 * batch * tokens * tokens * width_

    with torch.device("meta"):
        net = PixelDiT(config)
        for module in net.modules():
            if isinstance(module, nn.Linear):
                module.register_forward_hook(linear_hook)
            elif isinstance(module, Attention):
                module.register_forward_pre_hook(attention_hook)
        x = torch.empty(1, config.in_channels, height, width)
        net(x, torch.empty(1), torch.zeros(1, dtype=torch.long))
    return total


def count_params(model: str | PixelDiTConfig, **overrides) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in PixelDiT(model_config(model, **overrides)).parameters())
