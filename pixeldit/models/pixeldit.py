"""PixelDiT: a patch-level DiT for semantics plus pixel-level PiT blocks for detail (arXiv 2511.20645).

One implementation serves the paper's models and its ablation ladder; the ladder's rungs are options of
`PixelDiTConfig`, not copies of the model:

    rung                                   patch_block   pixel_depth  pixel_compaction  pixel_adaln
    vanilla DiT/16 in pixel space          "vanilla"     0            -                 -
    + RoPE + RMSNorm                       "augmented"   0            -                 -
    + dual level, no compaction (OOM@256)  "augmented"   M            False             "patch"
    + pixel token compaction               "augmented"   M            True              "patch"
    + pixel-wise AdaLN = PixelDiT          "augmented"   M            True              "pixel"

Data flow (official `pixdit_core/pixeldit_c2i.py`): patchify -> Linear -> N augmented DiT blocks conditioned
on c = SiLU(t_emb + y_emb) -> s_cond = SiLU(t_emb + s_N) per patch -> pixel tokens Linear(3 -> D_pix) + fixed
2D sin-cos -> M PiT blocks (pixel-wise AdaLN from s_cond, compress p^2*D_pix -> A, global attention over
patches, expand, per-pixel MLP) -> RMSNorm -> Linear(D_pix -> 3) -> image. Output is the velocity x - eps.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixeldit.models.layers import (
    Attention,
    GeluMLP,
    RMSNorm,
    SwiGLU,
    TimestepEmbedder,
    gated_residual,
    modulate,
    position_table,
    rope_2d_angles,
    rope_rotation,
    sincos_2d_position_embedding,
)


@dataclasses.dataclass(frozen=True)
class PixelDiTConfig:
    patch_depth: int                      # N augmented DiT blocks on patch tokens
    pixel_depth: int                      # M PiT blocks on pixel tokens (0 = patch-only ablation rungs)
    hidden_size: int                      # D
    num_heads: int
    patch_size: int = 16                  # p
    pixel_hidden_size: int = 16           # D_pix
    num_classes: int = 1000               # the null class id is num_classes
    in_channels: int = 3
    mlp_ratio: float = 4.0
    pixel_mlp_ratio: float = 4.0
    pixel_attn_hidden_size: int | None = None   # compaction width A (None = D, as for class-conditional)
    pixel_attn_heads: int | None = None         # None = num_heads
    pit_adaln_post_modulation: bool = False     # upstream PR #8: modulate branch outputs, no gates
    patch_block: Literal["augmented", "vanilla"] = "augmented"
    pixel_adaln: Literal["pixel", "patch"] = "pixel"
    pixel_compaction: bool = True
    name: str = ""

    def __post_init__(self):
        if self.patch_block not in ("augmented", "vanilla"):
            raise ValueError(f"patch_block must be 'augmented' or 'vanilla', got {self.patch_block!r}")
        if self.pixel_adaln not in ("pixel", "patch"):
            raise ValueError(f"pixel_adaln must be 'pixel' or 'patch', got {self.pixel_adaln!r}")
        if self.pixel_depth and self.patch_block == "vanilla":
            raise ValueError("PiT blocks build on augmented patch blocks; the vanilla rung has pixel_depth=0")

    @property
    def attn_hidden_size(self) -> int:
        return self.pixel_attn_hidden_size or self.hidden_size

    @property
    def attn_heads(self) -> int:
        return self.pixel_attn_heads or self.num_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PixelDiTConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PixelDiT config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, C*p*p), channel-major inside a patch (= F.unfold)."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def unpatchify(x: torch.Tensor, p: int, channels: int, height: int, width: int) -> torch.Tensor:
    """(B, L, C*p*p) -> (B, C, H, W), the inverse of `patchify`."""
    B = x.shape[0]
    x = x.reshape(B, height // p, width // p, channels, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, p, gw, p)
    return x.reshape(B, channels, height, width)


class PatchBlock(nn.Module):
    """DiT block with AdaLN-Zero. "augmented": RMSNorm, QK-RMSNorm, RoPE, SwiGLU; "vanilla": DiT's LayerNorm/GELU."""

    def __init__(self, config: PixelDiTConfig):
        super().__init__()
        D = config.hidden_size
        augmented = config.patch_block == "augmented"
        self.norm1 = RMSNorm(D) if augmented else nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, config.num_heads, qkv_bias=not augmented, qk_norm=augmented)
        self.norm2 = RMSNorm(D) if augmented else nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.mlp = SwiGLU(D, config.mlp_ratio) if augmented else GeluMLP(D, config.mlp_ratio, approximate="tanh")
        self.modulation = nn.Linear(D, 6 * D)

    def forward(self, s: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)  # each (B, 1, D)
        s = gated_residual(s, gate1, self.attn(modulate(self.norm1(s), shift1, scale1), rope))
        return gated_residual(s, gate2, self.mlp(modulate(self.norm2(s), shift2, scale2)))


class PiTBlock(nn.Module):
    """Pixel transformer block: pixel-wise AdaLN, token compaction -> global attention -> expansion, pixel MLP.

    Without compaction (an ablation rung) every pixel is its own attention token of width A.
    """

    def __init__(self, config: PixelDiTConfig):
        super().__init__()
        self.config = config
        Dp, p2, A = config.pixel_hidden_size, config.patch_size ** 2, config.attn_hidden_size
        token_dim = p2 * Dp if config.pixel_compaction else Dp
        self.num_modulations = 4 if config.pit_adaln_post_modulation else 6
        modulated_pixels = p2 if config.pixel_adaln == "pixel" else 1
        self.norm1 = RMSNorm(Dp)
        self.compress = nn.Linear(token_dim, A)
        self.attn = Attention(A, config.attn_heads, qkv_bias=False, qk_norm=True)
        self.expand = nn.Linear(A, token_dim)
        self.norm2 = RMSNorm(Dp)
        self.mlp = GeluMLP(Dp, config.pixel_mlp_ratio)
        self.modulation = nn.Linear(config.hidden_size, self.num_modulations * modulated_pixels * Dp)

    def global_attention(self, x: torch.Tensor, grid: tuple[int, int, int], rope: torch.Tensor) -> torch.Tensor:
        """Attention across the image for pixel tokens x (B*L, p^2, D_pix); returns the same shape."""
        B, gh, gw = grid
        BL, P2, Dp = x.shape
        p = self.config.patch_size
        if self.config.pixel_compaction:
            tokens = self.compress(x.reshape(B, gh * gw, P2 * Dp))            # (B, L, A)
            return self.expand(self.attn(tokens, rope)).reshape(BL, P2, Dp)
        raster = x.reshape(B, gh, gw, p, p, Dp).permute(0, 1, 3, 2, 4, 5).reshape(B, gh * p * gw * p, Dp)
        out = self.expand(self.attn(self.compress(raster), rope))       # (B, H*W, D_pix)
        return out.reshape(B, gh, p, gw, p, Dp).permute(0, 1, 3, 2, 4, 5).reshape(BL, P2, Dp)

    def forward(self, x: torch.Tensor, s_cond: torch.Tensor, grid: tuple[int, int, int],
                rope: torch.Tensor) -> torch.Tensor:
        BL, P2, Dp = x.shape
        params = self.modulation(s_cond).view(BL, -1, self.num_modulations * Dp)  # (B*L, p^2 or 1, n*D_pix)
        if self.config.pit_adaln_post_modulation:
            scale1, shift1, scale2, shift2 = params.chunk(4, dim=-1)
            x = x + modulate(self.global_attention(self.norm1(x), grid, rope), shift1, scale1)
            return x + modulate(self.mlp(self.norm2(x)), shift2, scale2)
        shift1, scale1, gate1, shift2, scale2, gate2 = params.chunk(6, dim=-1)
        x = gated_residual(x, gate1, self.global_attention(modulate(self.norm1(x), shift1, scale1), grid, rope))
        return gated_residual(x, gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))


class PixelDiT(nn.Module):
    """Class-conditional PixelDiT. forward(x, t, y): x (B, 3, H, W) in [-1, 1], t (B,) with t = 1 data,
    y (B,) int64 with null class = num_classes; returns the velocity (B, 3, H, W)."""

    def __init__(self, config: PixelDiTConfig):
        super().__init__()
        self.config = config
        D, p, C = config.hidden_size, config.patch_size, config.in_channels
        self.patch_embedder = nn.Linear(C * p * p, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = nn.Embedding(config.num_classes + 1, D)
        self.patch_blocks = nn.ModuleList(PatchBlock(config) for _ in range(config.patch_depth))
        if config.pixel_depth:
            self.pixel_embedder = nn.Linear(C, config.pixel_hidden_size)
            self.pixel_blocks = nn.ModuleList(PiTBlock(config) for _ in range(config.pixel_depth))
            self.final_norm = RMSNorm(config.pixel_hidden_size)
            self.final_linear = nn.Linear(config.pixel_hidden_size, C)
        else:  # patch-only rungs decode patches with DiT's modulated final layer
            augmented = config.patch_block == "augmented"
            self.final_norm = RMSNorm(D) if augmented else nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
            self.final_modulation = nn.Linear(D, 2 * D)
            self.final_linear = nn.Linear(D, C * p * p)
        self._tables: dict[tuple, torch.Tensor] = {}
        self.initialize_weights()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def initialize_weights(self) -> None:
        """The official initialisation; every other layer keeps PyTorch's default."""
        nn.init.xavier_uniform_(self.patch_embedder.weight)
        nn.init.zeros_(self.patch_embedder.bias)
        nn.init.normal_(self.y_embedder.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zeroed = [self.final_linear] + [block.modulation for block in self.patch_blocks]
        zeroed += [block.modulation for block in getattr(self, "pixel_blocks", [])]
        zeroed += [self.final_modulation] if hasattr(self, "final_modulation") else []
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _table(self, kind: str, *args: int, device: torch.device) -> torch.Tensor:
        """Position tables (RoPE rotations, sin-cos embeddings) cached per size and device, never saved."""
        key = (kind, *args, str(device))
        if key not in self._tables:
            builder = (lambda *a: rope_rotation(rope_2d_angles(*a))) if kind == "rope" else sincos_2d_position_embedding
            self._tables[key] = position_table(builder, *args, device=device)
        return self._tables[key]

    def check_input(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
        p = self.config.patch_size
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"PixelDiT expects x of shape (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % p or x.shape[3] % p:
            raise ValueError(f"image size {x.shape[2]}x{x.shape[3]} is not divisible by the patch size {p} "
                             f"of {self.config.name or 'this model'}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if t.numel() not in (1, x.shape[0]):
            raise ValueError(f"t must be a scalar or have {x.shape[0]} entries, got shape {tuple(t.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_input(x, t, y)
        cfg = self.config
        B, C, H, W = x.shape
        p, D = cfg.patch_size, cfg.hidden_size
        gh, gw = H // p, W // p
        t_emb = self.t_embedder(t.reshape(-1).expand(B))[:, None]             # (B, 1, D)
        c = F.silu(t_emb + self.y_embedder(y)[:, None])                        # (B, 1, D)

        s = self.patch_embedder(patchify(x, p))                                # (B, L, D)
        if cfg.patch_block == "vanilla":
            s = s + self._table("sincos", D, gh, gw, device=x.device).to(s.dtype)
            rope = None
        else:
            rope = self._table("rope", D // cfg.num_heads, gh, gw, device=x.device)
        for block in self.patch_blocks:
            s = block(s, c, rope)                                              # (B, L, D)

        if not cfg.pixel_depth:
            shift, scale = self.final_modulation(c).chunk(2, dim=-1)
            out = self.final_linear(modulate(self.final_norm(s), shift, scale))  # (B, L, C*p*p)
            return unpatchify(out, p, C, H, W)

        s_cond = F.silu(t_emb + s).reshape(B * gh * gw, D)                     # (B*L, D)
        pixels = self.pixel_embedder(x.permute(0, 2, 3, 1))                    # (B, H, W, D_pix)
        pixels = pixels + self._table("sincos", cfg.pixel_hidden_size, H, W, device=x.device).to(pixels.dtype).view(H, W, -1)
        Dp = cfg.pixel_hidden_size
        pixels = pixels.reshape(B, gh, p, gw, p, Dp).permute(0, 1, 3, 2, 4, 5).reshape(B * gh * gw, p * p, Dp)
        if cfg.pixel_compaction:
            rope = self._table("rope", cfg.attn_hidden_size // cfg.attn_heads, gh, gw, device=x.device)
        else:
            rope = self._table("rope", cfg.attn_hidden_size // cfg.attn_heads, H, W, device=x.device)
        for block in self.pixel_blocks:
            pixels = block(pixels, s_cond, (B, gh, gw), rope)                  # (B*L, p^2, D_pix)
        out = self.final_linear(self.final_norm(pixels))                       # (B*L, p^2, C)
        out = out.reshape(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)        # (B, C, gh, p, gw, p)
        return out.reshape(B, C, H, W)


# --------------------------------------------------------------------------------------------------
# The paper's incremental ablation (its Table 5) as overrides of any registry entry.
ABLATION_LADDER: dict[str, dict] = {
    "vanilla-dit": dict(patch_block="vanilla", pixel_depth=0),
    "rope-rmsnorm": dict(pixel_depth=0),
    "dual-level-no-compaction": dict(pixel_compaction=False, pixel_adaln="patch"),
    "compaction-patch-adaln": dict(pixel_adaln="patch"),
    "pixeldit": dict(),
}
