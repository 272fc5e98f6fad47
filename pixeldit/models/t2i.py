"""Text-to-image PixelDiT (upstream `pixdit_core/pixeldit_t2i.py`, `PixDiT_T2I`; HF nvidia/PixelDiT-1300M-1024px).

Data flow: patchify -> Linear -> N MM-DiT blocks over [text ; image] conditioned on c = SiLU(t_emb) only (no
pooled text) -> s_cond = SiLU(t_emb + s_N) per patch -> the class-conditional model's pixel path (pixel tokens
Linear(3 -> D_pix) + fixed 2D sin-cos, M `PiTBlock`s, RMSNorm -> Linear(D_pix -> 3)). The pixel path never sees
text tokens. Text tokens (B, T, text_dim) from a frozen encoder (Gemma-2-2B-IT) enter through
Linear(text_dim -> D) + RMSNorm plus a learned position table, and carry 1D RoPE in the joint attention; image
tokens carry the same 2D RoPE as the class-conditional model.

Time convention (SANA "linear_flow", the one the released weights were trained with), unlike the
class-conditional model: x_sigma = (1 - sigma) * x_0 + sigma * eps with sigma in [0, 1] (sigma = 1 is pure
noise), the model is called with t = 1000 * sigma and predicts eps - x_0. `DataTimeVelocity` wraps a model so
samplers written for the class-conditional convention (t = 1 data, v = x_0 - eps) can drive it.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixeldit.models.layers import (
    RMSNorm,
    SwiGLU,
    TimestepEmbedder,
    apply_rope,
    gated_residual,
    modulate,
    position_table,
    rope_2d_angles,
    rope_rotation,
    sincos_2d_position_embedding,
)
from pixeldit.models.pixeldit import PiTBlock, PixelDiTConfig, patchify

TRAIN_TIMESTEPS = 1000  # the model's time input is 1000 * sigma (SANA discrete flow, 1000 training steps)


@dataclasses.dataclass(frozen=True)
class PixelDiTT2IConfig:
    patch_depth: int = 14                 # N MM-DiT blocks
    pixel_depth: int = 2                  # M PiT blocks
    hidden_size: int = 1536               # D
    num_heads: int = 24
    patch_size: int = 16                  # p
    pixel_hidden_size: int = 16           # D_pix
    pixel_attn_hidden_size: int | None = 1152   # PiT compaction width A (None = D)
    pixel_attn_heads: int | None = 16           # None = num_heads
    text_dim: int = 2304                  # width of the text encoder's tokens (Gemma-2-2B)
    text_max_length: int = 300            # rows of the learned text position table
    text_rope_theta: float = 10000.0
    in_channels: int = 3
    mlp_ratio: float = 4.0
    pixel_mlp_ratio: float = 4.0
    pit_adaln_post_modulation: bool = False
    # Upstream's training wrapper drops the text mask, so the released model attends to padding tokens too
    # (their Gemma states are part of its input). True hides padding from the joint attention.
    mask_text_padding: bool = False
    name: str = ""

    def __post_init__(self):
        if self.pixel_depth < 1:
            raise ValueError("PixelDiT-T2I needs pixel_depth >= 1: its output comes from the pixel path")
        head_dim, rest = divmod(self.hidden_size, self.num_heads)
        if rest or head_dim % 4:
            raise ValueError(f"hidden_size {self.hidden_size} / {self.num_heads} heads must give a head dim divisible "
                             f"by 4 (2D RoPE)")

    def pixel_config(self) -> PixelDiTConfig:
        """The fields `PiTBlock` reads; the pixel path is the class-conditional model's."""
        return PixelDiTConfig(patch_depth=0, pixel_depth=self.pixel_depth, hidden_size=self.hidden_size,
                              num_heads=self.num_heads, patch_size=self.patch_size,
                              pixel_hidden_size=self.pixel_hidden_size, in_channels=self.in_channels,
                              pixel_mlp_ratio=self.pixel_mlp_ratio, pixel_attn_hidden_size=self.pixel_attn_hidden_size,
                              pixel_attn_heads=self.pixel_attn_heads,
                              pit_adaln_post_modulation=self.pit_adaln_post_modulation)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PixelDiTT2IConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PixelDiT-T2I config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


def rope_1d_angles(head_dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles (length, head_dim/2) for 1D RoPE over token positions 0..length-1."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (head_dim/2,)
    return torch.outer(torch.arange(length).float(), freqs)


class Stream(nn.Module):
    """One modality's weights in an MM-DiT block: its own AdaLN, RMSNorms, qkv, QK-RMSNorm, out-proj, SwiGLU."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.modulation = nn.Linear(dim, 6 * dim)
        self.norm1 = RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(dim // num_heads)
        self.k_norm = RMSNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_ratio)

    def heads(self, h: torch.Tensor, rope: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v of h (B, N, D), each (B, heads, N, head_dim), q and k normed then rotated."""
        B, N, D = h.shape
        q, k, v = self.qkv(h).reshape(B, N, 3, self.num_heads, D // self.num_heads).unbind(2)  # (B, N, heads, hd)
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class MMDiTBlock(nn.Module):
    """Two-stream block (SD3's MM-DiT): separate weights for image and text, one attention over [text ; image]."""

    def __init__(self, config: PixelDiTT2IConfig):
        super().__init__()
        self.image = Stream(config.hidden_size, config.num_heads, config.mlp_ratio)
        self.text = Stream(config.hidden_size, config.num_heads, config.mlp_ratio)

    def forward(self, s: torch.Tensor, y: torch.Tensor, c: torch.Tensor, image_rope: torch.Tensor,
                text_rope: torch.Tensor, attn_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, D = s.shape
        T = y.shape[1]
        shift1_s, scale1_s, gate1_s, shift2_s, scale2_s, gate2_s = self.image.modulation(c).chunk(6, dim=-1)  # (B, 1, D)
        shift1_y, scale1_y, gate1_y, shift2_y, scale2_y, gate2_y = self.text.modulation(c).chunk(6, dim=-1)
        q_s, k_s, v_s = self.image.heads(modulate(self.image.norm1(s), shift1_s, scale1_s), image_rope)
        q_y, k_y, v_y = self.text.heads(modulate(self.text.norm1(y), shift1_y, scale1_y), text_rope)
        joint = F.scaled_dot_product_attention(torch.cat([q_y, q_s], 2), torch.cat([k_y, k_s], 2),
                                               torch.cat([v_y, v_s], 2), attn_mask=attn_mask)  # (B, heads, T+L, hd)
        out_y, out_s = joint.transpose(1, 2).reshape(B, T + L, D).split([T, L], dim=1)
        s = gated_residual(s, gate1_s, self.image.proj(out_s))
        y = gated_residual(y, gate1_y, self.text.proj(out_y))
        s = gated_residual(s, gate2_s, self.image.mlp(modulate(self.image.norm2(s), shift2_s, scale2_s)))
        y = gated_residual(y, gate2_y, self.text.mlp(modulate(self.text.norm2(y), shift2_y, scale2_y)))
        return s, y


class PixelDiTT2I(nn.Module):
    """Text-conditional PixelDiT. forward(x, t, text_tokens, text_mask):

    x (B, 3, H, W) in [-1, 1] with H, W multiples of p; t (B,) or scalar, t = 1000 * sigma (1000 = noise);
    text_tokens (B, T, text_dim) with T <= text_max_length; text_mask (B, T), nonzero = real token (used only
    when `config.mask_text_padding`). Returns eps - x_0 (B, 3, H, W).
    """

    def __init__(self, config: PixelDiTT2IConfig):
        super().__init__()
        self.config = config
        D, p, C = config.hidden_size, config.patch_size, config.in_channels
        self.patch_embedder = nn.Linear(C * p * p, D)
        self.t_embedder = TimestepEmbedder(D)
        self.text_proj = nn.Linear(config.text_dim, D)
        self.text_norm = RMSNorm(D)
        self.text_pos_embedding = nn.Parameter(torch.randn(1, config.text_max_length, D))  # N(0, 1) as upstream
        self.patch_blocks = nn.ModuleList(MMDiTBlock(config) for _ in range(config.patch_depth))
        pixel_config = config.pixel_config()
        self.pixel_embedder = nn.Linear(C, config.pixel_hidden_size)
        self.pixel_blocks = nn.ModuleList(PiTBlock(pixel_config) for _ in range(config.pixel_depth))
        self.final_norm = RMSNorm(config.pixel_hidden_size)
        self.final_linear = nn.Linear(config.pixel_hidden_size, C)
        self._tables: dict[tuple, torch.Tensor] = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Upstream's T2I initialisation: unlike the class-conditional model, the AdaLN layers keep PyTorch's default."""
        nn.init.xavier_uniform_(self.patch_embedder.weight)
        nn.init.zeros_(self.patch_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final_linear.weight)
        nn.init.zeros_(self.final_linear.bias)

    def _table(self, kind: str, *args: int, device: torch.device) -> torch.Tensor:
        """Position tables (RoPE rotations, sin-cos embeddings) cached per size and device, never saved."""
        key = (kind, *args, str(device))
        if key not in self._tables:
            builders = {"rope": lambda *a: rope_rotation(rope_2d_angles(*a)), "sincos": sincos_2d_position_embedding,
                        "rope1d": lambda dim, n: rope_rotation(rope_1d_angles(dim, n, self.config.text_rope_theta))}
            self._tables[key] = position_table(builders[kind], *args, device=device)
        return self._tables[key]

    def check_input(self, x: torch.Tensor, t: torch.Tensor, text_tokens: torch.Tensor,
                    text_mask: torch.Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"PixelDiT-T2I expects x of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % cfg.patch_size or x.shape[3] % cfg.patch_size:
            raise ValueError(f"image size {x.shape[2]}x{x.shape[3]} is not divisible by the patch size {cfg.patch_size} "
                             f"of {cfg.name or 'this model'}")
        if t.numel() not in (1, x.shape[0]):
            raise ValueError(f"t must be a scalar or have {x.shape[0]} entries, got shape {tuple(t.shape)}")
        if text_tokens.ndim != 3 or text_tokens.shape[0] != x.shape[0] or text_tokens.shape[2] != cfg.text_dim:
            raise ValueError(f"text_tokens must have shape ({x.shape[0]}, T, {cfg.text_dim}), got {tuple(text_tokens.shape)}")
        if not 0 < text_tokens.shape[1] <= cfg.text_max_length:
            raise ValueError(f"{text_tokens.shape[1]} text tokens; {cfg.name or 'this model'} takes 1 to "
                             f"{cfg.text_max_length} (its position table)")
        if text_mask is not None and text_mask.shape != text_tokens.shape[:2]:
            raise ValueError(f"text_mask must have shape {tuple(text_tokens.shape[:2])}, got {tuple(text_mask.shape)}")

    def joint_attention_mask(self, text_mask: torch.Tensor | None, num_patches: int) -> torch.Tensor | None:
        """Boolean SDPA mask (B, 1, 1, T+L), True = attend, hiding text padding; None where padding is attended."""
        if text_mask is None or not self.config.mask_text_padding:
            return None
        image = torch.ones(text_mask.shape[0], num_patches, dtype=torch.bool, device=text_mask.device)
        return torch.cat([text_mask.bool(), image], dim=1)[:, None, None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_tokens: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, t, text_tokens, text_mask)
        cfg = self.config
        B, C, H, W = x.shape
        T = text_tokens.shape[1]
        p, D, Dp = cfg.patch_size, cfg.hidden_size, cfg.pixel_hidden_size
        gh, gw = H // p, W // p
        head_dim = D // cfg.num_heads
        t_emb = self.t_embedder(t.reshape(-1).expand(B))[:, None]             # (B, 1, D)
        c = F.silu(t_emb)                                                      # (B, 1, D)

        s = self.patch_embedder(patchify(x, p))                                # (B, L, D)
        y = self.text_norm(self.text_proj(text_tokens))                        # (B, T, D)
        y = y + self.text_pos_embedding[:, :T].to(y.dtype)
        image_rope = self._table("rope", head_dim, gh, gw, device=x.device)
        text_rope = self._table("rope1d", head_dim, T, device=x.device)
        attn_mask = self.joint_attention_mask(text_mask, gh * gw)
        for block in self.patch_blocks:
            s, y = block(s, y, c, image_rope, text_rope, attn_mask)           # (B, L, D), (B, T, D)

        s_cond = F.silu(t_emb + s).reshape(B * gh * gw, D)                     # (B*L, D)
        pixels = self.pixel_embedder(x.permute(0, 2, 3, 1))                    # (B, H, W, D_pix)
        pixels = pixels + self._table("sincos", Dp, H, W, device=x.device).to(pixels.dtype).view(H, W, Dp)
        pixels = pixels.reshape(B, gh, p, gw, p, Dp).permute(0, 1, 3, 2, 4, 5).reshape(B * gh * gw, p * p, Dp)
        pixel_config = self.pixel_blocks[0].config
        rope = self._table("rope", pixel_config.attn_hidden_size // pixel_config.attn_heads, gh, gw, device=x.device)
        for block in self.pixel_blocks:
            pixels = block(pixels, s_cond, (B, gh, gw), rope)                  # (B*L, p^2, D_pix)
        out = self.final_linear(self.final_norm(pixels))                       # (B*L, p^2, C)
        out = out.reshape(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)        # (B, C, gh, p, gw, p)
        return out.reshape(B, C, H, W)


class DataTimeVelocity(nn.Module):
    """A T2I model seen through the class-conditional convention: t in [0, 1] with t = 1 data, output x_0 - eps.

    x_t = t * x_0 + (1 - t) * eps is the T2I model's x_sigma at sigma = 1 - t, and x_0 - eps = -(eps - x_0).
    """

    def __init__(self, model: PixelDiTT2I):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_tokens: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        return -self.model(x, TRAIN_TIMESTEPS * (1 - t), text_tokens, text_mask)
