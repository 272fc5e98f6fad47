"""Building blocks shared by the PixelDiT variants: norms, rotary attention, embedders, MLPs.

Conventions follow the official code (NVlabs/PixelDiT `pixdit_core/modules.py`): t = 0 is noise and t = 1
data, the timestep embedding uses max_period = 10 on t in [0, 1], and 2D RoPE positions span [0, 16] on both
axes whatever the grid size.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """RMSNorm with a learnable weight, computed in fp32 (as the official code) and cast back."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift in one kernel (the modulations broadcast over tokens)."""
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """x + gate * branch in one kernel: the AdaLN-Zero residual update."""
    return torch.addcmul(x, gate, branch)


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> cos|sin frequency features (max_period 10) -> Linear-SiLU-Linear."""

    def __init__(self, hidden_size: int, frequency_size: int = 256, max_period: float = 10.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        self.frequency_size = frequency_size
        self.max_period = max_period

    def frequency_features(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]                             # (B, half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)        # (B, frequency_size)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = self.frequency_features(t).to(self.mlp[0].weight.dtype)
        return self.mlp(features)                                           # (B, D)


def sincos_2d_position_embedding(dim: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2D sin-cos table (height*width, dim), float64: first half encodes x (column), second half y (row).

    Same layout as MAE's `get_2d_sincos_pos_embed`, which the official pixel embedder uses.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))   # (dim/4,)
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")

    def encode(positions: np.ndarray) -> np.ndarray:
        angles = np.outer(positions.reshape(-1), omega)                  # (H*W, dim/4)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (H*W, dim/2)

    return torch.from_numpy(np.concatenate([encode(cols), encode(rows)], axis=1))


def position_table(builder: Callable[..., torch.Tensor], *args: int, device: torch.device) -> torch.Tensor:
    """A position table (RoPE rotation, sin-cos embedding) made by `builder(*args)` and moved to `device`.

    Built on the CPU even when the model lives on "meta" (FLOP counting); the models cache the result.
    """
    return _eager_position_table()(builder, *args, device=device)


def _cpu_position_table(builder: Callable[..., torch.Tensor], *args: int, device: torch.device) -> torch.Tensor:
    with torch.device("cpu"):
        return builder(*args).to(device)


@functools.cache
def _eager_position_table() -> Callable[..., torch.Tensor]:
    """numpy under a device context must run eagerly, also inside a compiled forward: torch.compiler.disable,
    applied on first use because it imports torch._dynamo (~1.3 s of every command's start-up otherwise)."""
    return torch.compiler.disable(_cpu_position_table)


def rope_2d_angles(head_dim: int, height: int, width: int, theta: float = 10000.0, span: float = 16.0) -> torch.Tensor:
    """Rotation angles (height*width, head_dim/2) for 2D RoPE; pairs alternate x, y frequencies.

    Positions are linspace(0, span, n) on each axis, so every grid size covers the same range (official code).
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim)  # (head_dim/4,)
    y, x = torch.meshgrid(torch.linspace(0, span, height), torch.linspace(0, span, width), indexing="ij")
    x_angles = torch.outer(x.reshape(-1), freqs)                          # (L, head_dim/4)
    y_angles = torch.outer(y.reshape(-1), freqs)                          # (L, head_dim/4)
    return torch.stack([x_angles, y_angles], dim=-1).reshape(height * width, head_dim // 2)


def rope_rotation(angles: torch.Tensor) -> torch.Tensor:
    """Unit complex numbers exp(i * angles), (N, head_dim/2) complex64: the table `apply_rope` multiplies by.

    Built once per grid size (the models cache it), so no block recomputes cos and sin.
    """
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, N, heads, head_dim) by rotation (N, head_dim/2) complex, in fp32."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))   # (B, N, heads, head_dim/2)
    return torch.view_as_real(pairs * rotation[None, :, None]).flatten(-2).type_as(x)


class Attention(nn.Module):
    """Multi-head self-attention; optional per-head QK-RMSNorm and 2D RoPE (PixelDiT) or neither (vanilla DiT)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, qk_norm: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).unbind(2)  # each (B, N, heads, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, heads, N, hd)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class SwiGLU(nn.Module):
    """SwiGLU feed-forward without biases; hidden = int(2/3 * mlp_ratio * dim) as in the official code."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(2 * int(dim * mlp_ratio) / 3)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GeluMLP(nn.Module):
    """Linear-GELU-Linear; `approximate="tanh"` for vanilla DiT blocks, exact GELU for the pixel MLP."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, approximate: str = "none"):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
