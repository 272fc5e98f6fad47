"""Import of NVlabs/PixelDiT text-to-image weights (upstream `pixdit_core.pixeldit_t2i.PixDiT_T2I`).

The release (HF nvidia/PixelDiT-1300M-1024px, `pixeldit_t2i_v1.pth`) is a `torch.save` of the SANA-style
training checkpoint: {"state_dict": wrapper weights, optionally "state_dict_ema", "optimizer", "rng_state", ...}.
The wrapper (`t2i/diffusion/model/trainer.py`, `PixDiTTrainer`) holds the model under `core.` and a REPA
projector used only in training. A bare FSDP `.bin` is the wrapper state_dict itself. Upstream names differ from
ours only in module paths; the mapping is an explicit table so an unexpected key fails loudly. Equivalence is
tested against a golden fixture produced by the upstream code (tests/fixtures/official_t2i/README.md).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from pixeldit.models.official import compile_key_map, load_checkpoint_file, rename_key
from pixeldit.models.registry import registered_name
from pixeldit.models.t2i import PixelDiTT2I, PixelDiTT2IConfig

# (upstream pattern, our name); \1 is the block index.
_KEY_MAP = [
    (r"s_embedder\.proj\.(weight|bias)", r"patch_embedder.\1"),
    (r"t_embedder\.mlp\.(0|2)\.(weight|bias)", r"t_embedder.mlp.\1.\2"),
    (r"y_embedder\.proj\.(weight|bias)", r"text_proj.\1"),
    (r"y_embedder\.norm\.weight", r"text_norm.weight"),
    (r"y_pos_embedding", r"text_pos_embedding"),
    (r"pixel_embedder\.proj\.(weight|bias)", r"pixel_embedder.\1"),
    (r"pixel_blocks\.(\d+)\.adaLN_modulation\.0\.(weight|bias)", r"pixel_blocks.\1.modulation.\2"),
    (r"pixel_blocks\.(\d+)\.compress_to_attn\.(weight|bias)", r"pixel_blocks.\1.compress.\2"),
    (r"pixel_blocks\.(\d+)\.expand_from_attn\.(weight|bias)", r"pixel_blocks.\1.expand.\2"),
    (r"pixel_blocks\.(\d+)\.(norm1|norm2)\.weight", r"pixel_blocks.\1.\2.weight"),
    (r"pixel_blocks\.(\d+)\.attn\.(qkv\.weight|q_norm\.weight|k_norm\.weight|proj\.weight|proj\.bias)", r"pixel_blocks.\1.attn.\2"),
    (r"pixel_blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"pixel_blocks.\1.mlp.\2.\3"),
    (r"final_layer\.norm\.weight", r"final_norm.weight"),
    (r"final_layer\.linear\.(weight|bias)", r"final_linear.\1"),
]
# MM-DiT blocks: upstream suffixes x / img are the image stream, y / txt the text stream.
for _upstream, _stream in (("x", "image"), ("y", "text")):
    _modulation = "img" if _stream == "image" else "txt"
    _KEY_MAP += [
        (rf"patch_blocks\.(\d+)\.adaLN_modulation_{_modulation}\.0\.(weight|bias)", rf"patch_blocks.\1.{_stream}.modulation.\2"),
        (rf"patch_blocks\.(\d+)\.norm_{_upstream}(1|2)\.weight", rf"patch_blocks.\1.{_stream}.norm\2.weight"),
        (rf"patch_blocks\.(\d+)\.attn\.(qkv|q_norm|k_norm)_{_upstream}\.weight", rf"patch_blocks.\1.{_stream}.\2.weight"),
        (rf"patch_blocks\.(\d+)\.attn\.proj_{_upstream}\.(weight|bias)", rf"patch_blocks.\1.{_stream}.proj.\2"),
        (rf"patch_blocks\.(\d+)\.mlp_{_upstream}\.(w1|w2|w3)\.weight", rf"patch_blocks.\1.{_stream}.mlp.\2.weight"),
    ]
_COMPILED = compile_key_map(_KEY_MAP)

WRAPPER_PREFIX = "core."
# Wrapper keys that are not part of the denoiser: the REPA projector (training only) and a stale `pos_embed`
# that upstream's own loader deletes before loading.
_TRAINING_ONLY = re.compile(r"(_repa_projector\..*|pos_embed)$")
CHECKPOINT_WEIGHTS = {"online": "state_dict", "ema": "state_dict_ema"}


def rename_official_t2i_key(key: str) -> str:
    renamed = rename_key(_COMPILED, key)
    if renamed is not None:
        return renamed
    raise KeyError(f"unexpected key {key!r} in an official PixelDiT-T2I state_dict; is this a PixDiT_T2I checkpoint "
                   f"(not class-conditional, not PixelDiT2)?")


def infer_official_t2i_config(sd: dict[str, torch.Tensor], **known) -> PixelDiTT2IConfig:
    """Read the architecture off the tensor shapes; `known` fills what shapes cannot tell (mask_text_padding, name)."""
    D, patch_in = sd["s_embedder.proj.weight"].shape
    pixel_dim, in_channels = sd["pixel_embedder.proj.weight"].shape
    patch_size = int(round((patch_in / in_channels) ** 0.5))
    def depth(prefix):
        return len({k.split(".")[1] for k in sd if k.startswith(prefix)})
    attn_width = sd["pixel_blocks.0.compress_to_attn.weight"].shape[0]
    post = sd["pixel_blocks.0.adaLN_modulation.0.weight"].shape[0] == 4 * pixel_dim * patch_size ** 2
    fields = dict(patch_depth=depth("patch_blocks."), pixel_depth=depth("pixel_blocks."), hidden_size=D,
                  num_heads=D // sd["patch_blocks.0.attn.q_norm_x.weight"].shape[0], patch_size=patch_size,
                  pixel_hidden_size=pixel_dim, pixel_attn_hidden_size=attn_width,
                  pixel_attn_heads=attn_width // sd["pixel_blocks.0.attn.q_norm.weight"].shape[0],
                  text_dim=sd["y_embedder.proj.weight"].shape[1], text_max_length=sd["y_pos_embedding"].shape[1],
                  in_channels=in_channels, pit_adaln_post_modulation=post, mask_text_padding=False)
    fields.update(known)
    config = PixelDiTT2IConfig(**fields)
    return dataclasses.replace(config, name=config.name or registered_name(config))


def from_official_t2i_state_dict(sd: dict[str, torch.Tensor], config: PixelDiTT2IConfig | None = None) -> PixelDiTT2I:
    """Build a PixelDiTT2I holding the weights of an upstream `PixDiT_T2I` state_dict (strict: no key left over)."""
    config = config or infer_official_t2i_config(sd)
    model = PixelDiTT2I(config)
    renamed = {rename_official_t2i_key(key): value for key, value in sd.items()}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise ValueError(f"official T2I state_dict does not fit {config.name or 'the inferred config'}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def extract_t2i_denoiser(checkpoint: dict, which: str = "online") -> dict[str, torch.Tensor]:
    """The `PixDiT_T2I` weights of a training checkpoint or bare wrapper state_dict.

    which="online" reads "state_dict", the weights upstream's `t2i/inference.py` samples with; "ema" reads
    "state_dict_ema" where the file has it.
    """
    if which not in CHECKPOINT_WEIGHTS:
        raise ValueError(f"which must be one of {sorted(CHECKPOINT_WEIGHTS)}, got {which!r}")
    if any(key in checkpoint for key in CHECKPOINT_WEIGHTS.values()):
        entry = CHECKPOINT_WEIGHTS[which]
        if entry not in checkpoint:
            raise ValueError(f"this checkpoint has no {entry!r} (it holds {sorted(checkpoint)[:10]})")
        state = checkpoint[entry]
    else:  # a bare FSDP `.bin` state_dict
        state = checkpoint
    if not any(key.startswith(WRAPPER_PREFIX) for key in state):
        return dict(state)  # already the bare model's state_dict
    sd = {}
    for key, value in state.items():
        if key.startswith(WRAPPER_PREFIX):
            sd[key[len(WRAPPER_PREFIX):]] = value
        elif not _TRAINING_ONLY.match(key):
            raise KeyError(f"unexpected key {key!r} in a PixelDiT-T2I checkpoint (expected 'core.*', "
                           f"'_repa_projector.*' or 'pos_embed')")
    return sd


def load_t2i_checkpoint(path: str | Path, trust_pickle: bool = False, which: str = "online") -> PixelDiTT2I:
    """Released `.pth` (or FSDP `.bin`) -> PixelDiTT2I in eval mode.

    Read with torch.load(weights_only=True); upstream training checkpoints also pickle NumPy/Python RNG
    states, which that refuses: pass trust_pickle=True only for a file from a source you trust.
    """
    raw = load_checkpoint_file(path, trust_pickle)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    return from_official_t2i_state_dict(extract_t2i_denoiser(raw, which)).eval()
