"""Latent-space DiT / SiT baselines (Peebles & Xie 2023; Ma et al. 2024) built from the project's blocks.

Data flow (facebookresearch/DiT `models.py`, willisma/SiT `models.py`): latents (B, 4, 32, 32) of the SD VAE
-> patchify at p = 2 -> Linear (= DiT's stride-p Conv2d) + fixed 2D sin-cos position table -> N vanilla DiT
blocks (LayerNorm, GELU-tanh MLP, AdaLN-Zero) conditioned on c = SiLU(t_emb + y_emb) -> modulated final
layer -> unpatchify. With `learn_sigma` the network has 2 x in_channels outputs as in DiT; the second half
(DiT's variance) is dropped in `forward`, which returns the velocity part only — the same thing SiT's
official forward does with its default `learn_sigma=True`.

Convention (as PixelDiT): model(x, t, y), t in [0, 1] with t = 1 data, y's null class = num_classes,
output = velocity x - eps. Every latent model here is trained by the project's rectified flow, which is
SiT's linear interpolant with velocity prediction, so `DiT-XL/2` and `SiT-XL/2` are the same network;
they differ only in how time enters the embedder: DiT embeds diffusion steps (1000·t, max_period 10000),
SiT embeds t itself (max_period 10000).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixeldit.models.layers import TimestepEmbedder, modulate, sincos_2d_position_embedding
from pixeldit.models.pixeldit import PatchBlock, PixelDiTConfig, patchify, unpatchify

ARCHITECTURE = "latent-dit"


@dataclasses.dataclass(frozen=True)
class LatentDiTConfig:
    depth: int
    hidden_size: int
    num_heads: int
    patch_size: int = 2
    input_size: int = 32                  # latent grid side = image side / autoencoder_downsample
    in_channels: int = 4
    learn_sigma: bool = True              # DiT's extra variance channels (unused by the flow loss)
    num_classes: int = 1000               # the null class id is num_classes
    mlp_ratio: float = 4.0
    time_scale: float = 1000.0            # the embedder sees time_scale·t (DiT: 1000, SiT: 1)
    autoencoder: str = "sd-vae-ft-ema"    # whose latents the model works on (weights name or AE directory)
    autoencoder_downsample: int = 8       # that autoencoder's spatial factor: image side = input_size · this
    name: str = ""
    architecture: Literal["latent-dit"] = ARCHITECTURE   # lets network files pick the model class

    def __post_init__(self):
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"LatentDiTConfig.architecture must be {ARCHITECTURE!r}, got {self.architecture!r}")
        if self.input_size % self.patch_size:
            raise ValueError(f"latent size {self.input_size} is not divisible by the patch size {self.patch_size}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def image_resolution(self) -> int:
        return self.input_size * self.autoencoder_downsample

    def block_config(self) -> PixelDiTConfig:
        """The PixelDiT config whose "vanilla" patch block is exactly DiT's block at this width."""
        return PixelDiTConfig(patch_depth=self.depth, pixel_depth=0, hidden_size=self.hidden_size,
                              num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, patch_block="vanilla")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LatentDiTConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LatentDiT config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


class LatentDiT(nn.Module):
    """Class-conditional DiT on autoencoder latents. forward(x, t, y): x (B, C, S, S) with S = input_size,
    t (B,) with t = 1 data, y (B,) int64; returns the velocity (B, C, S, S)."""

    def __init__(self, config: LatentDiTConfig):
        super().__init__()
        self.config = config
        D, p = config.hidden_size, config.patch_size
        grid = config.input_size // p
        self.patch_embedder = nn.Linear(config.in_channels * p * p, D)
        # A frozen Parameter, as in DiT: it is then part of DiT's published parameter count and state dict.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, D), requires_grad=False)
        self.t_embedder = TimestepEmbedder(D, max_period=10000.0)
        self.y_embedder = nn.Embedding(config.num_classes + 1, D)
        self.blocks = nn.ModuleList(PatchBlock(config.block_config()) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(D, 2 * D)
        self.final_linear = nn.Linear(D, config.out_channels * p * p)
        self.initialize_weights()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform Linears, N(0, 0.02) label and time tables, AdaLN-Zero."""
        grid = self.config.input_size // self.config.patch_size
        self.pos_embed.data.copy_(sincos_2d_position_embedding(self.config.hidden_size, grid, grid)[None])
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.y_embedder.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [self.final_modulation, self.final_linear, *(block.modulation for block in self.blocks)]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def check_input(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{cfg.name or 'LatentDiT'} expects latents of shape (B, {', '.join(map(str, expected))}) "
                             f"(its position table is fixed), got {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if t.numel() not in (1, x.shape[0]):
            raise ValueError(f"t must be a scalar or have {x.shape[0]} entries, got shape {tuple(t.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_input(x, t, y)
        cfg = self.config
        B, C, S, _ = x.shape
        t_emb = self.t_embedder(cfg.time_scale * t.reshape(-1).expand(B))[:, None]   # (B, 1, D)
        c = F.silu(t_emb + self.y_embedder(y)[:, None])                              # (B, 1, D)
        s = self.patch_embedder(patchify(x, cfg.patch_size)) + self.pos_embed.to(x.dtype)  # (B, L, D)
        for block in self.blocks:
            s = block(s, c, None)                                                    # (B, L, D)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        out = self.final_linear(modulate(self.final_norm(s), shift, scale))          # (B, L, C_out*p*p)
        out = unpatchify(out, cfg.patch_size, cfg.out_channels, S, S)                # (B, C_out, S, S)
        return out[:, :C]                                                            # velocity part only
