"""DINOv2 ViT-L/14 as EDM2's FD_DINOv2 uses it, written for this project.

EDM2 (`calculate_metrics.py`, `DINOv2Detector`, resize mode "torch") loads
`torch.hub.load('facebookresearch/dinov2:main', 'dinov2_vitl14')` and feeds it

    uint8 N×3×H×W -> float32 -> bicubic, antialiased resize to 224×224 (no clamp, no requantisation)
    -> /255 -> (x - ImageNet mean) / ImageNet std -> model(x) = CLS token after the final LayerNorm, 1024-d

The network here is an own module, not timm's `vit_large_patch14_dinov2`, for two reasons: its parameter
names are those of the official `dinov2_vitl14_pretrain.pth`, so that file loads strictly with no key
mapping; and its position embeddings are resized from the checkpoint's 37×37 grid to the input's grid by
DINOv2's own rule (bicubic by a scale factor of (grid + 0.1) / 37, no antialias), which timm's resampling
(to an output size) does not reproduce. Attention is PyTorch's scaled_dot_product_attention, as the
official code uses when xFormers is absent. tests/test_imagenet_dinov2.py checks the output against the
official code's on seeded weights (tests/fixtures/dinov2_equivalence/).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluators.imagenet.checkpoints import read_state_dict
from evaluators.imagenet.errors import ImageNetEvalError
from pixeldit.infra import weights as registry

DINOV2_VITL14 = registry.register_weight(registry.WeightFile(
    name="dinov2-vitl14",
    url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
    filename="dinov2_vitl14_pretrain.pth",
    licence="Apache-2.0 (facebookresearch/dinov2)",
    # Meta publishes no checksum for this file; the protocol card records the sha256 of the file used.
    description="DINOv2 ViT-L/14 LVD-142M (torch.hub dinov2_vitl14, EDM2's FD_DINOv2 network)"))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
FEATURE_DIM = 1024
VITL14 = dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4, patch_size=14, checkpoint_grid=37)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)     # (B, N, 3, h, C/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                                       # 3 × (B, h, N, C/h)
        out = F.scaled_dot_product_attention(q, k, v)                              # (B, h, N, C/h)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))                     # (B, N, C)


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.ls1, self.ls2 = LayerScale(dim), LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)                             # (B, H/14·W/14, C)


class DinoV2ViT(nn.Module):
    """DINOv2's ViT without registers; `forward` returns the normalised CLS token (B, embed_dim)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: int, patch_size: int,
                 checkpoint_grid: int):
        super().__init__()
        self.patch_size, self.checkpoint_grid = patch_size, checkpoint_grid
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + checkpoint_grid ** 2, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))     # unused at inference; in the checkpoint
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """(1, 1 + h·w, C) for an h×w patch grid: DINOv2's bicubic resize by scale (grid + 0.1) / 37."""
        grid_h, grid_w, M = height // self.patch_size, width // self.patch_size, self.checkpoint_grid
        if grid_h * grid_w == M * M and grid_h == grid_w:
            return self.pos_embed
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, M, M, -1).permute(0, 3, 1, 2)            # (1, C, 37, 37)
        # The 0.1 offset is DINOv2's guard against floor() rounding the output size down.
        scale = ((grid_h + 0.1) / M, (grid_w + 0.1) / M)
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", antialias=False)
        if patch_pos.shape[-2:] != (grid_h, grid_w):
            raise ImageNetEvalError(f"position grid {tuple(patch_pos.shape[-2:])} for a {grid_h}×{grid_w} input")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)  # (1, h·w, C)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        tokens = self.patch_embed(x)                                               # (B, N, C)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)  # (B, 1 + N, C)
        tokens = tokens + self.position_embeddings(height, width)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]                                             # (B, C)


def dinov2_vitl14() -> DinoV2ViT:
    """The architecture of torch.hub's `dinov2_vitl14` (img_size 518, so a 37×37 position grid)."""
    return DinoV2ViT(**VITL14)


def edm2_preprocess(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """EDM2's DINOv2Detector input: uint8 (B, 3, H, W) -> ImageNet-normalised float32 (B, 3, size, size)."""
    x = F.interpolate(images.to(torch.float32), size=(size, size), mode="bicubic", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


def load_official(path, device: str | torch.device = "cpu", config: dict | None = None) -> DinoV2ViT:
    """The network with the official checkpoint's tensors (`dinov2_vitl14_pretrain.pth` key names, strict).

    config: the architecture (`DinoV2ViT`'s arguments), ViT-L/14 by default; tests pass tiny ones."""
    config = VITL14 if config is None else config
    what = "DINOv2 ViT-L/14" if config == VITL14 else f"DINOv2 ViT {config}"
    state_dict = read_state_dict(path, what)
    network = DinoV2ViT(**config)
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ImageNetEvalError(f"{path} is not a {what} checkpoint in the official format: "
                                f"{str(error).splitlines()[0]}") from None
    return network.eval().requires_grad_(False).to(device)


class DINOv2Features:
    """uint8 images (B, H, W, 3) -> {layer: (B, 1024) float32}, EDM2's FD_DINOv2 features."""

    def __init__(self, network: DinoV2ViT, device: str | torch.device, size: int = INPUT_SIZE,
                 layer: str = "dinov2"):
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.size, self.layer = size, layer

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)  # (B, 3, H, W)
        features = self.network(edm2_preprocess(batch, self.size))                 # (B, 1024)
        return {self.layer: features.float().cpu().numpy()}
