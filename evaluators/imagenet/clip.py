"""CLIP ViT-L/14 @ 336 image embeddings exactly as google-research's cmmd computes CMMD's, written for this project.

CMMD (Jayasumana et al. 2024, "Rethinking FID") is computed by google-research/google-research `cmmd/main.py`
`compute_cmmd`: `io_util.compute_embeddings_for_dir` for each image folder, then `distance.mmd`. Each fact below
names the source line it rests on (cmmd files at the commits in tests/fixtures/clip_equivalence/meta.json,
scenic at the commit there, Pillow 13.0.0's sdist):

* model: cmmd `embedding.py:23` `_CLIP_MODEL_NAME = 'vit_l14_336px'`, `:42-44` `clip.MODELS[...]()`,
  `clip.load_model_vars(...)`, `clip.IMAGE_RESOLUTION[...]` from google-research/scenic
  `projects/baselines/clip/model.py`: `:45` `CHECKPOINTS_TORCH['vit_l14_336px']` is OpenAI's `ViT-L-14-336px.pt`,
  `:102` `CONFIGS['vit_l14_336px']` width 1024, 24 layers, patch 14, `embed_dim` 768, `:72` resolution 336;
  scenic `layers.py:432` heads = width // `vision_head_dim` 64 = 16, `:32` `LayerNorm` `epsilon=1e-5`,
  `:35` `quick_gelu` (x·sigmoid(1.702x)), `:237` MLP width 4×, `:334` `ln_pre` after the class + position
  embeddings, `:344-345` `ln_post` on the class token then `proj` without bias. That is transformers'
  `CLIPVisionModelWithProjection` with the public config.json of openai/clip-vit-large-patch14-336
  (vision_config: hidden_size 1024, 24 layers, 16 heads, patch 14, image 336, intermediate 4096,
  projection_dim 768; quick_gelu and layer_norm_eps 1e-5 are CLIPVisionConfig's defaults): `VITL14_336` below.
  That Hugging Face checkpoint holds OpenAI's weights converted to this layout, and is what this module loads
  (scenic `model.py:171-173` reads the OpenAI .pt with `torch.jit.load(...).state_dict()` and keeps the file's
  dtypes; an fp16 tensor is promoted by Flax to float32 in the float32 computation, so scenic uses the values an
  exact float32 copy holds. That the Hugging Face file is such a copy is not checked here: no network);
* reading: cmmd `io_util.py:122` the images are read at the model's `input_image_size` (336); `:40-46`
  `_center_crop_and_resize`: the centred square of side `l = min(w, h)`, `top = (h - l) // 2`,
  `left = (w - l) // 2`, then `im.resize((size, size), resample=Image.BICUBIC)` on the uint8 PIL image
  ("performs anti-aliasing as well"); `:57` `np.asarray(im).astype(np.float32)`; `:82` grey images tiled to RGB;
* value range: `io_util.py:139` `image_batch / 255.0` (float32), `:141` refused outside [0, 1];
* resize: Pillow's BICUBIC, `Resample.c:48` `bicubic_filter` (Keys, a = -0.5, support 2), `:227`
  `precompute_coeffs` (support scaled by the reduction factor when downscaling: antialiased),
  `:314` `normalize_coeffs_8bpc` (22 fractional bits, rounded half away from zero), two 8-bit passes each
  rounded and clipped to uint8, `:865` the horizontal pass first unless the height shrinks by more than twice as
  many pixels as the width (never for cmmd's square-to-square resize; Pillow 12 and earlier always go horizontal
  first); `Image.py:2409-2410` an unchanged size is a plain copy. Reproduced bit for bit in torch below
  (`pil_bicubic_resize`), so the whole path runs on the device. cmmd `embedding.py:29` then applies
  `jax.image.resize(images, (..., 336, 336, 3), method='bicubic')`: on the 336×336 images `io_util` delivers it
  is the identity (measured: max change 0.0, meta.json), so it is not repeated here;
* crop: the centre square above; no other crop;
* normalisation: cmmd `embedding.py:33` `clip.normalize_image`, scenic `model.py:329`
  `(img - IMAGE_MEAN) / IMAGE_STD`, `:74-75` IMAGE_MEAN (0.48145466, 0.4578275, 0.40821073), IMAGE_STD
  (0.26862954, 0.26130258, 0.27577711); JAX computes it in float32 (float64 constants are canonicalised), as here;
* output: cmmd `embedding.py:58` `image_embs, _ = self._model.apply(self._model_vars, images, None)`; scenic
  `layers.py:471` `CLIP.__call__` → `encode_image(image, normalize=True)`, `:454`
  `x /= jnp.linalg.norm(x, axis=-1, keepdims=True)` on `visual(image)[0]` = `proj(ln_post(x[:, 0]))` (=
  transformers' `image_embeds`): 768-d, L2-normalised, float32. The features this module returns (and the
  cache stores) are exactly that normalised embedding; `extractor_metrics.cmmd` normalises again, which changes
  nothing beyond rounding;
* CMMD: cmmd `distance.py:25,28,90` biased MMD² with exp(-|x - y|² / (2·10²)) × 1000 in JAX float32
  (`extractor_metrics.cmmd` computes the same in float64).

Full float32 here: TF32 is off during extraction on GPUs (as for Inception). tests/test_imagenet_clip.py checks
the features against cmmd's own code + scenic's CLIP on seeded weights of a tiny CLIP of the same architecture
(tests/fixtures/clip_equivalence/, made outside the repository; the script is in its README).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from evaluators.imagenet.checkpoints import read_state_dict
from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.inception import no_tf32
from pixeldit.infra import weights as registry

CLIP_VITL14_336 = registry.register_weight(registry.WeightFile(
    name="clip-vit-l14-336",
    url="https://huggingface.co/openai/clip-vit-large-patch14-336/resolve/main/pytorch_model.bin",
    filename="clip-vit-large-patch14-336/pytorch_model.bin",
    licence="MIT (openai/CLIP)",
    # The Git LFS pointer of pytorch_model.bin on the main branch (commit a2ab452 "add model", 1.71 GB), shown at
    # huggingface.co/openai/clip-vit-large-patch14-336/blob/main/pytorch_model.bin. That repository's main branch
    # has no model.safetensors (only the unmerged conversion-bot pull request refs/pr/8 does).
    sha256="c6032c2e0caae3dc2d4fba35535fa6307dbb49df59c7e182b1bc4b3329b81801",
    description="CLIP ViT-L/14 @ 336 (OpenAI weights, Hugging Face layout; cmmd's CMMD network)"))

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INPUT_SIZE = 336
FEATURE_DIM = 768
LAYER = "features"          # = extractors.LAYER, the one array an extra extractor's cache entry holds
# transformers CLIPVisionConfig arguments of openai/clip-vit-large-patch14-336's vision tower
VITL14_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
# keys of the full CLIPModel checkpoint that are not the vision tower and projection (position_ids: a buffer
# older transformers versions saved)
IGNORED_PREFIXES = ("text_model.", "text_projection.", "logit_scale", "vision_model.embeddings.position_ids")

# The registry entry's descriptive fields (`extractors.Extractor`), kept beside the code they describe.
NETWORK = ("CLIP ViT-L/14 @ 336 image tower + visual projection (transformers CLIPVisionModelWithProjection, "
           "OpenAI weights in the Hugging Face layout)")
RESIZE = {"kind": "bicubic (PIL Image.BICUBIC: Keys a = -0.5, support scaled by the reduction factor)",
          "antialias": True, "from": "uint8", "crop": "centre square of side min(H, W), offsets (H - l) // 2, "
          "(W - l) // 2", "to": [INPUT_SIZE, INPUT_SIZE],
          "implementation": "PIL's 8-bit two-pass resample (horizontal pass first) reproduced exactly in torch",
          "clamp": True, "requantise": True}
NORMALISATION = "x / 255, then (x - CLIP mean (0.48145466, 0.4578275, 0.40821073)) / std (0.26862954, 0.26130258, 0.27577711)"
OUTPUT_LAYER = "image_embeds (class token, post-LayerNorm, visual projection), L2-normalised"
REPRODUCES = ("google-research/google-research cmmd (main.py compute_cmmd: io_util.compute_embeddings_for_dir + "
              "embedding.ClipEmbeddingModel, scenic CLIP vit_l14_336px)")

PRECISION_BITS = 22         # Resample.c: 32 - 8 - 2


# --------------------------------------------------------------------------------------------- PIL's resize

def _pil_bicubic(x: np.ndarray) -> np.ndarray:
    """Resample.c `bicubic_filter` (a = -0.5), same operation order, float64."""
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1                     # ((a + 2) x - (a + 3)) x x + 1
    far = (((x - 5) * x + 8) * x - 4) * -0.5                  # (((x - 5) x + 8) x - 4) a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@lru_cache(maxsize=32)
def pil_bicubic_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float64 matrix of PIL's integer BICUBIC coefficients (× 2^22) for a full-range resize.

    Resample.c `precompute_coeffs` with box (0, in_size), then `normalize_coeffs_8bpc`."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inv_filterscale = 1.0 / filterscale
    center = (np.arange(out_size) + 0.5) * scale                                    # (out,)
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)         # C (int) truncates
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    ksize = int(np.ceil(support)) * 2 + 1
    taps = np.arange(ksize)
    valid = taps[None, :] < xmax[:, None]                                           # (out, ksize)
    weights = np.where(valid, _pil_bicubic(((taps[None, :] + xmin[:, None]) - center[:, None] + 0.5) * inv_filterscale),
                       0.0)
    total = np.zeros(out_size)
    for tap in range(ksize):                                                        # C's sequential sum
        total = total + weights[:, tap]
    weights = np.where(total[:, None] != 0, weights / np.where(total == 0, 1, total)[:, None], weights)
    fixed = weights * (1 << PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + fixed), np.trunc(0.5 + fixed))   # normalize_coeffs_8bpc
    matrix = np.zeros((out_size, in_size))
    rows, cols = np.nonzero(valid)
    matrix[rows, xmin[rows] + cols] = fixed[rows, cols]
    return torch.from_numpy(matrix)


def _resample_last_axis(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """One PIL 8-bit pass along the last axis: integer coefficients, + 2^21, >> 22, clipped to 0..255.

    float64 is exact here: every product and partial sum is an integer below 2^53."""
    matrix = pil_bicubic_matrix(x.shape[-1], out_size).to(x.device)
    acc = x.to(torch.float64) @ matrix.T + (1 << (PRECISION_BITS - 1))
    return torch.floor(acc / (1 << PRECISION_BITS)).clamp_(0, 255).to(torch.uint8)


def pil_bicubic_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, size[0], size[1]), equal to Pillow 13's `Image.resize((w, h), BICUBIC)`.

    Pass order (Resample.c `ImagingResampleInner`): Pillow 13 runs the vertical pass first when the height shrinks
    by more than twice as many pixels as the width, else the horizontal one; Pillow 12 and earlier always ran the
    horizontal pass first. Both give the same bytes for cmmd's square-to-square resize. A pass whose size does not
    change is skipped, and an unchanged size is a plain copy."""
    height, width = size
    in_height, in_width = images.shape[-2:]
    if (in_height, in_width) == (height, width):
        return images.clone()

    def horizontal(x: torch.Tensor) -> torch.Tensor:
        return x if in_width == width else _resample_last_axis(x, width)

    def vertical(x: torch.Tensor) -> torch.Tensor:
        return x if in_height == height else _resample_last_axis(x.transpose(-1, -2), height).transpose(-1, -2)

    if in_height - height > 0 and in_height - height > 2 * (in_width - width):
        return horizontal(vertical(images))
    return vertical(horizontal(images))


def centre_square(images: torch.Tensor) -> torch.Tensor:
    """cmmd's `_center_crop_and_resize` crop: the centred l×l square, l = min(H, W)."""
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top:top + side, left:left + side]


def cmmd_preprocess(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """cmmd's input: uint8 (B, 3, H, W) -> CLIP-normalised float32 (B, 3, size, size)."""
    square = pil_bicubic_resize(centre_square(images), (size, size))
    x = square.to(torch.float32) / 255
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------- network

def build_network(config: dict | None = None):
    """transformers' CLIPVisionModelWithProjection for a CLIPVisionConfig dict (ViT-L/14-336 by default), eval mode."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # lazy: transformers is in the full stack only

    config = VITL14_336 if config is None else config
    network = CLIPVisionModelWithProjection(CLIPVisionConfig(**config, attn_implementation="sdpa"))
    return network.eval().requires_grad_(False)


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … ({len(keys)} in all)" if len(keys) > limit else shown


def load_official(path, config: dict | None = None, device: str | torch.device = "cpu"):
    """The network with the released checkpoint's vision tower and visual projection (Hugging Face key names).

    A full CLIPModel file (openai/clip-vit-large-patch14-336's pytorch_model.bin) is accepted: its text tower,
    text projection and logit scale are skipped. Any other missing or unexpected key refuses the file.
    config: CLIPVisionConfig arguments, ViT-L/14-336 by default; tests pass tiny ones."""
    path = Path(path)
    config = VITL14_336 if config is None else config
    what = "CLIP ViT-L/14-336" if config == VITL14_336 else f"CLIP vision {config}"
    state = {name: tensor for name, tensor in read_state_dict(path, what).items()
             if not name.startswith(IGNORED_PREFIXES)}
    with torch.device("meta"):                    # names and shapes only: a file is refused before the real build
        expected = build_network(config).state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + ([f"unexpected {_names(unexpected)}"] if unexpected else [])
        raise ImageNetEvalError(f"{path} is not a {what} checkpoint in the Hugging Face layout (vision_model.*, "
                                f"visual_projection.weight): {'; '.join(parts)}")
    wrong = [f"{name} {tuple(getattr(state[name], 'shape', ()))} (expected {tuple(tensor.shape)})"
             for name, tensor in expected.items()
             if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape]
    if wrong:
        raise ImageNetEvalError(f"{path} does not fit the {what} architecture: {_names(wrong)}")
    network = build_network(config)
    network.load_state_dict(state, strict=True)
    return network.to(device)


class CLIPFeatures:
    """uint8 images (B, H, W, 3) -> {layer: (B, 768) float32}: cmmd's L2-normalised CLIP image embeddings."""

    def __init__(self, network, device: str | torch.device, size: int = INPUT_SIZE, layer: str = LAYER):
        if network.config.image_size != size:
            raise ImageNetEvalError(f"the network takes {network.config.image_size}×{network.config.image_size} "
                                    f"inputs, not {size}×{size}")
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.size, self.layer = size, layer

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ImageNetEvalError(f"CLIP features need uint8 (B, H, W, 3) images, got {images.dtype} {images.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)   # (B, 3, H, W)
        with no_tf32():
            embeds = self.network(pixel_values=cmmd_preprocess(batch, self.size)).image_embeds   # (B, 768)
        embeds = embeds / torch.linalg.vector_norm(embeds, dim=-1, keepdim=True)          # encode_image(normalize=True)
        return {self.layer: embeds.float().cpu().numpy()}


def build_clip(path: Path, entry, device) -> CLIPFeatures:
    """The registry's build function (`extractors.Extractor.build`): entry.config and entry.input_resolution."""
    network = load_official(path, entry.config, device)
    return CLIPFeatures(network, device, size=entry.input_resolution, layer=LAYER)
