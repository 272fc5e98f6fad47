"""REPA: align an intermediate patch-block output with frozen DINOv2 features (upstream REPATrainer).

Target: DINOv2 ViT-B/14 `x_norm_patchtokens` of the clean image in [0, 1], ImageNet-normalised and
bicubically resized to 14·H/16 (256 -> 224: a 16x16 token grid). Source: the output of patch block
`align_layer` (1-indexed, before the SiLU), through a projector D -> D -> D -> 768 with SiLU. Loss:
mean(1 - cos), weighted 0.5 in the total loss. When the grids differ, the source is pooled (or bilinearly
resized) to the target grid, as upstream does.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixeldit.infra.weights import WeightFile, register_weight, resolve

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DINOV2_VITB14 = register_weight(WeightFile(
    name="dinov2-vitb14",
    url="https://huggingface.co/timm/vit_base_patch14_dinov2.lvd142m/resolve/main/model.safetensors",
    filename="dinov2_vitb14_lvd142m.safetensors",
    licence="Apache-2.0 (facebookresearch/dinov2)",
    description="DINOv2 ViT-B/14 (timm vit_base_patch14_dinov2.lvd142m), the REPA target encoder"))


class FeatureEncoder(nn.Module):
    """A frozen ViT with timm's interface: images in [0, 1] (B, 3, H, W) -> patch tokens (B, N, C)."""

    def __init__(self, vit: nn.Module, base_patch_size: int = 16):
        super().__init__()
        self.vit = vit.eval().requires_grad_(False)
        self.base_patch_size = base_patch_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @torch.no_grad()
    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        B, _, H, W = images01.shape
        patch = self.vit.patch_embed.patch_size[0]
        size = (patch * H // self.base_patch_size, patch * W // self.base_patch_size)
        x = F.interpolate((images01 - self.mean) / self.std, size=size, mode="bicubic")
        tokens = self.vit.forward_features(x)                      # (B, prefix + N, C), final norm applied
        return tokens[:, self.vit.num_prefix_tokens:]              # (B, N, C)


def load_dinov2_vitb14(device: torch.device | str = "cpu") -> FeatureEncoder:
    """The real REPA encoder from the weights registry (fails fast offline, naming the fetch command)."""
    import timm  # lazy: timm is needed only when REPA is on

    path = resolve(DINOV2_VITB14.name)
    vit = timm.create_model("vit_base_patch14_dinov2.lvd142m", pretrained=True, dynamic_img_size=True,
                            pretrained_cfg_overlay={"file": str(path)})
    return FeatureEncoder(vit).to(device)


def tiny_random_encoder(embed_dim: int = 32, seed: int = 0) -> FeatureEncoder:
    """A random-init ViT/14 with DINOv2's interface, for tests and offline smoke runs."""
    from timm.models.vision_transformer import VisionTransformer  # lazy: as above

    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=28, patch_size=14, embed_dim=embed_dim, depth=1, num_heads=2,
                            num_classes=0, dynamic_img_size=True)
    return FeatureEncoder(vit)


ENCODERS = {"dinov2-vitb14": load_dinov2_vitb14, "tiny-random": lambda device="cpu": tiny_random_encoder().to(device)}


class RepaProjector(nn.Module):
    """Projector MLP hidden -> hidden -> hidden -> encoder_dim with SiLU (3.5M params for XL)."""

    def __init__(self, hidden_size: int, encoder_dim: int, projector_dim: int | None = None):
        super().__init__()
        width = projector_dim or hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden_size, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, encoder_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def match_token_grid(source: torch.Tensor, target_tokens: int) -> torch.Tensor:
    """Resize source tokens (B, Ls, C) on their square grid to target_tokens (pool down, bilinear up)."""
    B, Ls, C = source.shape
    if Ls == target_tokens:
        return source
    side_s, side_t = int(round(Ls ** 0.5)), int(round(target_tokens ** 0.5))
    if side_s ** 2 != Ls or side_t ** 2 != target_tokens:
        raise ValueError(f"REPA needs square token grids to resize, got {Ls} model and {target_tokens} encoder tokens")
    grid = source.transpose(1, 2).reshape(B, C, side_s, side_s)
    if side_t < side_s:
        grid = F.adaptive_avg_pool2d(grid, side_t)
    else:
        grid = F.interpolate(grid, size=(side_t, side_t), mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)                         # (B, target_tokens, C)


def repa_loss(block_output: torch.Tensor, projector: RepaProjector, target: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos) between projected block tokens (B, L, D) and encoder tokens (B, N, C)."""
    projected = match_token_grid(projector(block_output), target.shape[1])
    return (1 - F.cosine_similarity(projected.float(), target.float(), dim=-1)).mean()
