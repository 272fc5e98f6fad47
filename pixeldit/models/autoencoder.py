"""Autoencoders for the latent baselines: the SD VAE of DiT/SiT and a small one for the embedded default.

Both are diffusers `AutoencoderKL`s behind one wrapper, `LatentAutoencoder`, which owns the latent scaling:

    latent = (z - shift) * scale,    z = a posterior sample of the encoder (as DiT's training script draws)

- `sd-vae-ft-ema` (stabilityai, used by DiT and SiT): shift 0, scale 0.18215 for every channel (DiT).
- the small digits32 autoencoder (`pixeldit.train_autoencoder`): per-channel shift = mean and
  scale = 1 / std of posterior samples over its training split, stored in its file.

Encoding draws the posterior sample of image `indices[k]` from its own generator seeded by (seed, index),
so a latent does not depend on the batch it was encoded in (the latent cache relies on that).
Decoding quantises like the sampler (`pixeldit.infra.images.quantize`, round half up) to uint8 NHWC.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pixeldit.infra.files import atomic_path, save_npz_atomic
from pixeldit.infra.images import quantize, to_model_range
from pixeldit.infra.weights import WeightFile, register_weight, resolve

FORMAT = "pixeldit-bench/autoencoder/v1"
SD_VAE = "sd-vae-ft-ema"
SD_VAE_SCALE = 0.18215          # DiT's `latent_dist.sample().mul_(0.18215)`
_HF = "https://huggingface.co/stabilityai/sd-vae-ft-ema/resolve/main"

register_weight(WeightFile(
    name=SD_VAE, url=f"{_HF}/diffusion_pytorch_model.safetensors",
    filename="sd-vae-ft-ema/diffusion_pytorch_model.safetensors", licence="MIT",
    description="SD VAE ft-EMA weights (stabilityai/sd-vae-ft-ema), the autoencoder of DiT and SiT"))
register_weight(WeightFile(
    name=f"{SD_VAE}-config", url=f"{_HF}/config.json", filename="sd-vae-ft-ema/config.json", licence="MIT",
    description="SD VAE ft-EMA architecture (stabilityai/sd-vae-ft-ema config.json)"))

# The architecture fields of stabilityai/sd-vae-ft-ema's config.json: lets FLOPs be counted with no weights.
SD_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                     act_fn="silu", block_out_channels=(128, 256, 512, 512), sample_size=256,
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)

# The embedded default: 32x32 RGB -> 4x8x8 latents (factor 4, two downsamplings), ~1M parameters.
DIGITS_AE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
                        act_fn="silu", block_out_channels=(32, 64, 64), sample_size=32,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)

# Architectures by name, so compute can be counted for an autoencoder that is not on disk (or not yet trained).
AUTOENCODER_ARCHITECTURES: dict[str, dict] = {SD_VAE: SD_VAE_CONFIG, "digits32-ae": DIGITS_AE_CONFIG}


def build_vae(config: dict):
    """A randomly initialised diffusers AutoencoderKL of the given architecture."""
    # lazy: diffusers is optional (the `latent` extra); it needs the torchvision shim `import pixeldit` installed
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config)


def architecture_of(vae) -> dict:
    """The public (non-underscore) config entries of an AutoencoderKL, JSON-ready."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dict(vae.config).items() if not key.startswith("_")}


def autoencoder_architecture(autoencoder: LatentAutoencoder | dict | str) -> dict:
    """The AutoencoderKL config of a loaded autoencoder, a config dict, or a name of AUTOENCODER_ARCHITECTURES."""
    if isinstance(autoencoder, LatentAutoencoder):
        return architecture_of(autoencoder.vae)
    if isinstance(autoencoder, dict):
        return autoencoder
    if autoencoder in AUTOENCODER_ARCHITECTURES:
        return AUTOENCODER_ARCHITECTURES[autoencoder]
    raise TypeError(f"expected a LatentAutoencoder, an AutoencoderKL config dict or an architecture name "
                    f"({', '.join(AUTOENCODER_ARCHITECTURES)}), got {autoencoder!r}")


def per_image_noise(seed: int, indices: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """(len(indices), *shape) float32 noise; row k comes from a generator seeded by (seed, indices[k])."""
    generator = torch.Generator()
    rows = []
    for index in indices:
        generator.manual_seed(int(np.random.SeedSequence([seed, int(index)]).generate_state(1, np.uint64)[0] >> 1))
        rows.append(torch.randn(tuple(shape), generator=generator))
    return torch.stack(rows)


class LatentAutoencoder(nn.Module):
    """An AutoencoderKL with its latent scaling. encode: uint8 NHWC -> latents (N, C, h, w) float32;
    decode: latents -> uint8 NHWC. `name` says where it came from (registry name or file)."""

    def __init__(self, vae, shift: torch.Tensor, scale: torch.Tensor, name: str):
        super().__init__()
        channels = vae.config.latent_channels
        if shift.shape != (channels,) or scale.shape != (channels,):
            raise ValueError(f"latent shift/scale must have shape ({channels},), got {tuple(shift.shape)}, {tuple(scale.shape)}")
        self.vae = vae.eval().requires_grad_(False)
        self.register_buffer("shift", shift.float())
        self.register_buffer("scale", scale.float())
        self.name = name

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return self.shift.device

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """(C, h, w) of the latents of `resolution`² images."""
        if resolution % self.downsample:
            raise ValueError(f"{resolution}px is not divisible by the autoencoder's factor {self.downsample}")
        side = resolution // self.downsample
        return self.latent_channels, side, side

    def fingerprint(self) -> str:
        """sha256 over architecture, scaling and every weight: two autoencoders with equal fingerprints
        produce equal latents (the latent cache refuses to mix fingerprints)."""
        digest = hashlib.sha256(json.dumps(architecture_of(self.vae), sort_keys=True).encode())
        for key, value in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor, *, sample: bool = True, seed: int = 0,
               indices: Sequence[int] | None = None) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> scaled latents (N, C, H/f, W/f) float32 on the CPU.

        sample=True: a posterior sample (DiT's choice: the model learns the decoder's input distribution),
        whose noise for image k comes from (seed, indices[k]) (default indices 0..N-1); False: the mean.
        """
        images = torch.as_tensor(np.asarray(images))
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"encode expects uint8 images (N, H, W, 3), got {tuple(images.shape)} {images.dtype}")
        if images.shape[1] % self.downsample or images.shape[2] % self.downsample:
            raise ValueError(f"image size {images.shape[1]}x{images.shape[2]} is not divisible by the "
                             f"autoencoder's factor {self.downsample}")
        x = to_model_range(images.permute(0, 3, 1, 2).to(self.device))            # (N, 3, H, W) in [-1, 1]
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean                                                        # (N, C, h, w)
        if sample:
            indices = range(len(images)) if indices is None else indices
            if len(indices) != len(images):
                raise ValueError(f"{len(indices)} indices for {len(images)} images")
            z = z + posterior.std * per_image_noise(seed, indices, z.shape[1:]).to(z.device)
        return ((z - self.shift[:, None, None]) * self.scale[:, None, None]).float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, quantization: str = "round") -> np.ndarray:
        """Scaled latents (N, C, h, w) -> uint8 images (N, h·f, w·f, 3), quantised as the sampler does."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"decode expects latents (N, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        z = latents.to(self.device).float() / self.scale[:, None, None] + self.shift[:, None, None]
        return quantize(self.vae.decode(z).sample, quantization)                  # (N, H, W, 3) uint8


# ------------------------------------------------------------------------------------------------ files

def save_autoencoder(path: str | os.PathLike, autoencoder: LatentAutoencoder, metadata: dict | None = None) -> Path:
    """Weights, architecture and latent scaling in one safetensors file (atomic), plus a JSON sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "config": json.dumps(architecture_of(autoencoder.vae)),
              "shift": json.dumps(autoencoder.shift.tolist()), "scale": json.dumps(autoencoder.scale.tolist()),
              **{key: json.dumps(value) for key, value in (metadata or {}).items()}}
    state = {key: value.detach().cpu().contiguous() for key, value in autoencoder.vae.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(state, str(temp), metadata=header)
    sidecar = {key: json.loads(value) for key, value in header.items() if key != "format"}
    path.with_suffix(".json").write_text(json.dumps({"format": FORMAT, **sidecar}, indent=2) + "\n")
    return path


def load_autoencoder(source: str | os.PathLike, device: str | torch.device = "cpu") -> LatentAutoencoder:
    """`sd-vae-ft-ema` (from the weights registry; fails fast offline), an autoencoder file written by
    `save_autoencoder`, or a directory holding `autoencoder.safetensors` (what `train_autoencoder` writes)."""
    if str(source) == SD_VAE:
        return load_sd_vae(device)
    path = Path(source)
    if path.is_dir():
        path = path / "autoencoder.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no autoencoder at {path}; train one with `train_autoencoder` or use {SD_VAE!r}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); retrain or re-copy it") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pixeldit-bench autoencoder file (format {header.get('format')!r})")
    vae = build_vae(json.loads(header["config"]))
    vae.load_state_dict(state)
    shift, scale = (torch.tensor(json.loads(header[key])) for key in ("shift", "scale"))
    return LatentAutoencoder(vae, shift, scale, name=str(path)).to(device)


def load_sd_vae(device: str | torch.device = "cpu") -> LatentAutoencoder:
    """The real stabilityai/sd-vae-ft-ema with DiT's fixed scale 0.18215."""
    from diffusers import AutoencoderKL  # lazy: diffusers is optional (the `latent` extra)

    config = json.loads(resolve(f"{SD_VAE}-config").read_text())
    vae = AutoencoderKL.from_config(config)
    vae.load_state_dict(load_file(str(resolve(SD_VAE))))
    channels = vae.config.latent_channels
    return LatentAutoencoder(vae, torch.zeros(channels), torch.full((channels,), SD_VAE_SCALE), name=SD_VAE).to(device)


# ------------------------------------------------------------------------------------------------ rFID

def reconstruct(autoencoder: LatentAutoencoder, dataset, *, batch_size: int = 64, sample: bool = False,
                seed: int = 0, out: str | os.PathLike | None = None) -> np.ndarray:
    """Encode -> decode every image of a dataset split: uint8 (N, H, W, 3) in dataset order, for rFID.

    The posterior mean by default (deterministic; `sample=True` scores what the diffusion model is trained
    on). With `out`, also writes an ADM-style .npz (arr_0 images, arr_1 labels) for the ImageNet evaluator.
    """
    chunks, labels = [], []
    for start in range(0, len(dataset), batch_size):
        indices = np.arange(start, min(start + batch_size, len(dataset)))
        images, batch_labels = dataset.get_batch(indices)                         # (B, H, W, 3) uint8, (B,)
        latents = autoencoder.encode(images, sample=sample, seed=seed, indices=indices)
        chunks.append(autoencoder.decode(latents))
        labels.append(batch_labels)
    reconstructions = np.concatenate(chunks)                                      # (N, H, W, 3) uint8
    if out is not None:
        save_npz_atomic(out, arr_0=reconstructions, arr_1=np.concatenate(labels))
    return reconstructions
