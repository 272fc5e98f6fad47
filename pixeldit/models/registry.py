"""One registry for every model family: named configs keyed by the papers' names, and one build / family-of.

    MODELS["PixelDiT-XL/16"]                      a config (PixelDiTConfig, LatentDiTConfig or PixelDiTT2IConfig)
    model_config(name | config, ablation, **kw)   a registry entry with an ablation rung and field overrides
    build_network(name | config, ...)             the model of that config, randomly initialised
    family_of(name | config)                      "pixeldit", "latent-dit" or "pixeldit-t2i" (what network files record)

Adding a family: its config and model class in FAMILIES, its named configs in MODELS.
"""
from __future__ import annotations

import dataclasses

import torch.nn as nn

from pixeldit.models.latent_dit import LatentDiT, LatentDiTConfig
from pixeldit.models.pixeldit import ABLATION_LADDER, PixelDiT, PixelDiTConfig
from pixeldit.models.t2i import PixelDiTT2I, PixelDiTT2IConfig

ModelConfig = PixelDiTConfig | LatentDiTConfig | PixelDiTT2IConfig


@dataclasses.dataclass(frozen=True)
class Family:
    config_class: type
    model_class: type[nn.Module]


# Family name (the `family` of a network file's header) -> its classes.
FAMILIES: dict[str, Family] = {
    "pixeldit": Family(PixelDiTConfig, PixelDiT),
    "pixeldit-t2i": Family(PixelDiTT2IConfig, PixelDiTT2I),
    "latent-dit": Family(LatentDiTConfig, LatentDiT),
}

MODELS: dict[str, ModelConfig] = {
    # PixelDiT, class-conditional. B/L/XL: arXiv 2511.20645 (XL = c2i/configs/pix256_xl.yaml).
    "PixelDiT-B/16": PixelDiTConfig(name="PixelDiT-B/16", patch_depth=12, pixel_depth=2, hidden_size=768,
                                    num_heads=12),
    "PixelDiT-L/16": PixelDiTConfig(name="PixelDiT-L/16", patch_depth=22, pixel_depth=4, hidden_size=1024,
                                    num_heads=16),
    "PixelDiT-XL/16": PixelDiTConfig(name="PixelDiT-XL/16", patch_depth=26, pixel_depth=4, hidden_size=1152,
                                     num_heads=16),
    # Small presets for the embedded 32x32 benchmark and tests (not from the paper).
    # S/4 is sized for the embedded default's CPU budget: ~80 training images/s on one core, so 20 kimg
    # (~600 steps) take ~4 minutes; 1.57M parameters, 159 MFLOPs per 32x32 forward.
    "PixelDiT-S/4": PixelDiTConfig(name="PixelDiT-S/4", patch_depth=4, pixel_depth=1, hidden_size=128, num_heads=4,
                                   patch_size=4, num_classes=10),
    "PixelDiT-T/4": PixelDiTConfig(name="PixelDiT-T/4", patch_depth=2, pixel_depth=1, hidden_size=64, num_heads=2,
                                   patch_size=4, pixel_hidden_size=8, num_classes=10),

    # Latent DiT / SiT baselines. XL/B/S: DiT Table 1 (facebookresearch/DiT models.py); SiT-XL/2 as willisma/SiT
    # models.py, whose default learn_sigma=True keeps DiT's 8 output channels and discards half in forward
    # (675,129,632 params).
    "DiT-XL/2": LatentDiTConfig(name="DiT-XL/2", depth=28, hidden_size=1152, num_heads=16),
    "DiT-B/2": LatentDiTConfig(name="DiT-B/2", depth=12, hidden_size=768, num_heads=12),
    "DiT-S/2": LatentDiTConfig(name="DiT-S/2", depth=12, hidden_size=384, num_heads=6),
    "SiT-XL/2": LatentDiTConfig(name="SiT-XL/2", depth=28, hidden_size=1152, num_heads=16, time_scale=1.0),
    # Embedded default: latents 4x8x8 of the small digits32 autoencoder (pixeldit.models.autoencoder), p = 1,
    # so 64 tokens of width 128 and depth 4 — the same token grid and trunk as PixelDiT-S/4 on 32x32 images.
    "LatentDiT-S/1": LatentDiTConfig(name="LatentDiT-S/1", depth=4, hidden_size=128, num_heads=4, patch_size=1,
                                     input_size=8, learn_sigma=False, num_classes=10, time_scale=1.0,
                                     autoencoder="digits32-ae", autoencoder_downsample=4),

    # PixelDiT-T2I = t2i/configs/PixelDiT_*px_pixel_diffusion_stage*.yaml (1.3B). The small presets are not from
    # the paper: 32x32 images with all-MiniLM-L6-v2 (384-d) text tokens, for the embedded demo and tests.
    "PixelDiT-T2I": PixelDiTT2IConfig(name="PixelDiT-T2I"),
    "PixelDiT-T2I-S/4": PixelDiTT2IConfig(name="PixelDiT-T2I-S/4", patch_depth=6, pixel_depth=2, hidden_size=256,
                                          num_heads=4, patch_size=4, pixel_attn_hidden_size=None,
                                          pixel_attn_heads=None, text_dim=384, text_max_length=32,
                                          mask_text_padding=True),
    "PixelDiT-T2I-T/4": PixelDiTT2IConfig(name="PixelDiT-T2I-T/4", patch_depth=2, pixel_depth=1, hidden_size=64,
                                          num_heads=2, patch_size=4, pixel_hidden_size=8, pixel_attn_hidden_size=None,
                                          pixel_attn_heads=None, text_dim=384, text_max_length=32,
                                          mask_text_padding=True),
}


def family_of(model: str | ModelConfig) -> str:
    """The family of a registry name or a config."""
    config = MODELS.get(model) if isinstance(model, str) else model
    for family, entry in FAMILIES.items():
        if type(config) is entry.config_class:
            return family
    if isinstance(model, str):
        raise KeyError(f"unknown model {model!r}; registered: {', '.join(MODELS)}")
    raise TypeError(f"no model family for config type {type(model).__name__}; known: {sorted(FAMILIES)}")


def models_in(family: str) -> dict[str, ModelConfig]:
    """The registry entries of one family, in registry order."""
    if family not in FAMILIES:
        raise KeyError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return {name: config for name, config in MODELS.items() if family_of(config) == family}


def model_config(model: str | ModelConfig, ablation: str | None = None, **overrides) -> ModelConfig:
    """A registry entry (or a given config) with an optional ablation rung (PixelDiT only) and field overrides,
    e.g. model_config("PixelDiT-S/4", ablation="vanilla-dit") or model_config("DiT-XL/2", input_size=64)."""
    family = family_of(model)
    config = MODELS[model] if isinstance(model, str) else model
    if ablation is not None:
        if family != "pixeldit":
            raise ValueError(f"ablation rungs apply to the class-conditional PixelDiT only, not to "
                             f"{config.name or family}")
        if ablation not in ABLATION_LADDER:
            raise KeyError(f"unknown ablation rung {ablation!r}; known: {', '.join(ABLATION_LADDER)}")
        overrides = {**ABLATION_LADDER[ablation], **overrides}
    return dataclasses.replace(config, **overrides)


def build_network(model: str | ModelConfig, ablation: str | None = None, **overrides) -> nn.Module:
    """Instantiate any registry entry or config, e.g. build_network("PixelDiT-XL/16"),
    build_network("PixelDiT-S/4", ablation="vanilla-dit") or build_network("SiT-XL/2", learn_sigma=False)."""
    config = model_config(model, ablation, **overrides)
    return FAMILIES[family_of(config)].model_class(config)


def registered_name(config: ModelConfig, ignoring: tuple[str, ...] = ()) -> str:
    """The registry name whose architecture equals `config` (names and the `ignoring` fields aside), or ''."""
    for name, entry in MODELS.items():
        if type(entry) is type(config):
            comparable = dataclasses.replace(entry, name="", **{field: getattr(config, field) for field in ignoring})
            if comparable == dataclasses.replace(config, name=""):
                return name
    return ""
