"""Import of NVlabs/PixelDiT class-conditional checkpoints (upstream `pixdit_core.pixeldit_c2i.PixDiT`).

Upstream names differ from ours only in module paths; the tensors are used as they are. The mapping is an
explicit table so an unexpected key (another architecture, a T2I checkpoint) fails loudly instead of being
dropped. Equivalence is tested against a golden fixture produced by the upstream code
(tests/fixtures/official_c2i/README.md).
"""
from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from pathlib import Path

import torch

from pixeldit.models.io import save_network
from pixeldit.models.pixeldit import PixelDiT, PixelDiTConfig
from pixeldit.models.registry import registered_name

# (upstream pattern, our name); \1 is the block index.
_KEY_MAP = [
    (r"s_embedder\.proj\.(weight|bias)", r"patch_embedder.\1"),
    (r"t_embedder\.mlp\.(0|2)\.(weight|bias)", r"t_embedder.mlp.\1.\2"),
    (r"y_embedder\.embedding_table\.weight", r"y_embedder.weight"),
    (r"patch_blocks\.(\d+)\.adaLN_modulation\.0\.(weight|bias)", r"patch_blocks.\1.modulation.\2"),
    (r"patch_blocks\.(\d+)\.(norm1|norm2)\.weight", r"patch_blocks.\1.\2.weight"),
    (r"patch_blocks\.(\d+)\.attn\.(qkv\.weight|q_norm\.weight|k_norm\.weight|proj\.weight|proj\.bias)", r"patch_blocks.\1.attn.\2"),
    (r"patch_blocks\.(\d+)\.mlp\.(w1|w2|w3)\.weight", r"patch_blocks.\1.mlp.\2.weight"),
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


def compile_key_map(table: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(pattern + r"$"), target) for pattern, target in table]


def rename_key(compiled: list[tuple[re.Pattern, str]], key: str) -> str | None:
    """Our name for an upstream key by the first matching pattern, or None when no pattern matches."""
    for pattern, target in compiled:
        match = pattern.match(key)
        if match:
            return match.expand(target)
    return None


_COMPILED = compile_key_map(_KEY_MAP)

# Prefixes a Lightning checkpoint puts in front of the denoiser's own keys.
LIGHTNING_PREFIXES = {"ema": "ema_denoiser.", "online": "denoiser."}


def rename_official_key(key: str) -> str:
    renamed = rename_key(_COMPILED, key)
    if renamed is not None:
        return renamed
    raise KeyError(f"unexpected key {key!r} in an official PixelDiT state_dict; is this a class-conditional "
                   f"PixDiT checkpoint (not T2I, not PixelDiT2)?")


def infer_official_config(sd: dict[str, torch.Tensor], **known) -> PixelDiTConfig:
    """Read the architecture off the tensor shapes; `known` fills what shapes cannot tell (num_heads)."""
    D, patch_in = sd["s_embedder.proj.weight"].shape
    in_channels = sd["pixel_embedder.proj.weight"].shape[1]
    patch_size = int(round((patch_in / in_channels) ** 0.5))
    pixel_dim = sd["pixel_embedder.proj.weight"].shape[0]
    def depth(prefix):
        return len({k.split(".")[1] for k in sd if k.startswith(prefix)})
    modulation_rows = sd["pixel_blocks.0.adaLN_modulation.0.weight"].shape[0]
    post = modulation_rows == 4 * pixel_dim * patch_size ** 2
    head_dim = sd["patch_blocks.0.attn.q_norm.weight"].shape[0]
    fields = dict(patch_depth=depth("patch_blocks."), pixel_depth=depth("pixel_blocks."), hidden_size=D,
                  num_heads=D // head_dim, patch_size=patch_size, pixel_hidden_size=pixel_dim,
                  num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1, in_channels=in_channels,
                  pit_adaln_post_modulation=post)
    fields.update(known)
    return PixelDiTConfig(**fields)


def from_official_state_dict(sd: dict[str, torch.Tensor], config: PixelDiTConfig | None = None) -> PixelDiT:
    """Build a PixelDiT holding the weights of an upstream `PixDiT` state_dict (strict: no key left over)."""
    config = config or infer_official_config(sd)
    model = PixelDiT(config)
    renamed = {rename_official_key(key): value for key, value in sd.items()}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise ValueError(f"official state_dict does not fit {config.name or 'the inferred config'}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def extract_lightning_denoiser(checkpoint: dict, which: str = "ema") -> dict[str, torch.Tensor]:
    """The denoiser's weights from a released Lightning `.ckpt` (EMA by default)."""
    if which not in LIGHTNING_PREFIXES:
        raise ValueError(f"which must be one of {sorted(LIGHTNING_PREFIXES)}, got {which!r}")
    state = checkpoint.get("state_dict", checkpoint)
    prefix = LIGHTNING_PREFIXES[which]
    sd = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not sd:
        prefixes = sorted({key.split(".")[0] for key in state})
        raise ValueError(f"no '{prefix}*' weights in this checkpoint (top-level prefixes: {prefixes[:10]}); "
                         f"pass which='online' for the non-EMA denoiser")
    return sd


def load_checkpoint_file(path: str | Path, trust_pickle: bool = False) -> dict:
    """torch.load with weights_only=True; a pickle that needs more is refused unless explicitly trusted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            what = f"it refers to {found[1]}" if found else "it stores more than tensors"
            raise ValueError(f"{path} needs a full pickle load ({what}). "
                             f"Pickles can run code: pass --trust-pickle only for files from a source you trust.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({error}); it may be truncated — download it again") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def import_official_checkpoint(checkpoint: str | Path, out: str | Path, which: str = "ema", trust_pickle: bool = False,
                               dry_run: bool = False) -> tuple[PixelDiTConfig, Path]:
    """Released `.ckpt` -> network file (weights stored under `ema.*` or `net.*` as chosen), verified by a forward."""
    raw = load_checkpoint_file(checkpoint, trust_pickle)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint} holds a {type(raw).__name__}, not a state_dict")
    sd = extract_lightning_denoiser(raw, which) if any(k.startswith(("ema_denoiser.", "denoiser.")) for k in state) else state
    model = from_official_state_dict(sd)
    config = dataclasses.replace(model.config, name=registered_name(model.config, ignoring=("num_classes",)))
    if not dry_run:
        weights = {"ema" if which == "ema" else "net": model.state_dict()}
        save_network(out, config, **weights, metadata={"source": str(checkpoint), "imported_from": "NVlabs/PixelDiT",
                                                       "weights": which})
    return config, Path(out)
