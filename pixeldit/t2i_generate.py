"""Batched text-to-image generation into the benchmarks' layouts: seeded, sharded, resumable.

Prompt sets and what each writes into the output folder:

- ``geneval`` (553 prompts): GenEval's layout, ``<index:05d>/metadata.jsonl`` and ``<index:05d>/samples/
  <j:04d>.png`` (`evaluators.geneval.prompts`), 4 samples per prompt;
- ``dpg`` (1,065 prompts): one 2x2 grid of 4 samples per prompt, ``<item_id>.png`` (`evaluators.dpg.layout`);
- a caption set of `pixeldit.data.captions` (``digits``: "a handwritten digit seven", ...): one prompt per
  class, any number of samples each, written as ``shard-<first:07d>-<last:07d>.npz`` (arr_0 uint8 NHWC, arr_1 the
  prompt's class) and merged into ``samples.npz`` for the ImageNet-style metrics and the class check.

Reproducibility, as class-conditional sampling (`pixeldit.sample`): sample j of prompt p gets its own noise,
seeded by the hash of (seed, "p/j"), so an image depends on nothing but its prompt, index and settings.
Shards are ranges of prompts, run by the shard engine `pixeldit.infra.shards`: a shard is done when
``.shards/shard-<first:07d>-<last:07d>.json`` records the same settings and every file it lists still hashes to
its recorded sha256; anything else is redone. Images and sidecars are written atomically. Independent jobs
(SLURM array tasks, torchrun ranks) fill disjoint shards.
Each shard's prompts are encoded once, in one batch, and the null / negative prompt once per run.

Aspect ratios: square only. Upstream samples GenEval and DPG at the square bucket (1024x1024 or 512x512),
which is what these benchmarks score; SANA's other ASPECT_RATIO_512/1024 buckets are not built here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from evaluators.dpg.layout import write_grid
from evaluators.dpg.prompts import load_prompts
from evaluators.geneval.prompts import load_metadata, sample_path, verify_data, write_prompt_folders
from evaluators.registry import load_task
from pixeldit.conditioning import TextCondition
from pixeldit.data.captions import CAPTION_SETS, class_captions
from pixeldit.infra.devices import resolve_device
from pixeldit.infra.files import atomic_path, check_disk_space, save_npz_atomic, sha256_file, write_json_atomic
from pixeldit.infra.images import QUANTIZATIONS, quantize
from pixeldit.infra.progress import Progress
from pixeldit.infra.runs import resolve_network
from pixeldit.infra.shards import (
    merge_npz,
    pending_shards,
    ranks_shard_ids,
    shard_file,
    shard_ranges,
    sidecar_path,
    verified_shards,
    write_sidecar,
)
from pixeldit.models.io import load_network, read_network_header
from pixeldit.models.t2i import DataTimeVelocity
from pixeldit.sample import sample_noise
from pixeldit.samplers import Sampler
from pixeldit.text_encoders import TextEncoder, get_text_encoder

log = logging.getLogger(__name__)

SAMPLES_SCHEMA = "pixeldit-bench/t2i-samples/v2"
GENERATE_COMMAND = "`pixeldit-bench t2i generate`"
NOISE_RULE = ("randn(3,H,W) float32 from torch.Generator(cpu).manual_seed(sha256('pixeldit-bench/noise/<seed>/"
              "<prompt>/<sample>')[:8] little-endian & (2**63-1))")
CAPTION_SET_SAMPLES_PER_PROMPT = 4   # the default for a caption set; a benchmark's count is fixed by its task spec


@dataclasses.dataclass(frozen=True)
class PromptItem:
    name: str                      # GenEval folder index, DPG item id, or the class id
    prompt: str
    label: int | None = None       # the class a caption-set prompt asks for
    metadata: dict | None = None   # GenEval's record for this prompt


@dataclasses.dataclass(frozen=True)
class PromptSet:
    name: str
    layout: str                    # "geneval" | "dpg" | "npz"
    items: tuple[PromptItem, ...]

    def sha256(self) -> str:
        blob = json.dumps([dataclasses.asdict(item) for item in self.items], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def load_prompt_set(name: str) -> PromptSet:
    """'geneval', 'dpg', or a caption set name ('digits')."""
    if name == "geneval":
        verify_data()
        return PromptSet(name, "geneval", tuple(PromptItem(f"{index:05d}", record["prompt"], metadata=record)
                                                 for index, record in enumerate(load_metadata())))
    if name == "dpg":
        return PromptSet(name, "dpg", tuple(PromptItem(item_id, prompt) for item_id, prompt in load_prompts().items()))

    if name not in CAPTION_SETS:
        raise ValueError(f"unknown prompt set {name!r}; choose geneval, dpg or a caption set ({', '.join(CAPTION_SETS)})")
    return PromptSet(name, "npz", tuple(PromptItem(str(label), captions[0], label=label)
                                        for label, captions in enumerate(class_captions(name))))


# ------------------------------------------------------------------------------------------------
# Model, text encoder, one batch of images


@dataclasses.dataclass
class T2IGenerator:
    """A T2I network (in the samplers' convention) with its text encoder and the null / negative embedding."""

    model: torch.nn.Module
    encoder: TextEncoder
    null: tuple[torch.Tensor, torch.Tensor]   # (1, T, d), (1, T)
    device: torch.device
    autocast_bf16: bool = False

    def encode(self, prompts: list[str]) -> TextCondition:
        tokens, mask = self.encoder.encode(prompts)                           # (P, T, d), (P, T)
        return TextCondition(tokens.to(self.device), mask.to(self.device), *self.null)

    def images(self, sampler: Sampler, condition: TextCondition, noise: torch.Tensor,
               quantization: str) -> np.ndarray:
        """uint8 (B, H, W, 3) for the noise (B, 3, H, W) and condition rows of one batch."""
        def forward(x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                return self.model(x, t, tokens, mask)

        x = sampler.sample(forward, noise.to(self.device), condition)          # (B, 3, H, W)
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"the sampler produced non-finite values (sampler {sampler.key}); try without "
                                     f"--bf16 or check the checkpoint")
        return quantize(x, quantization)


@dataclasses.dataclass(frozen=True)
class NetworkPlan:
    """What generation needs to know of a network file before loading it (its header alone)."""

    path: Path
    config: object                 # PixelDiTT2IConfig
    which: str                     # "ema" where the file has it, else "net" (an imported release)
    text_encoder: str
    resolution: int | None


def plan_network(network: str | os.PathLike, text_encoder: str | None) -> NetworkPlan:
    """Resolve a run directory or file and read its T2I config, weight set and text encoder from the header."""
    path = resolve_network(network)
    config, metadata, present = read_network_header(path)
    if metadata["family"] != "pixeldit-t2i":
        raise ValueError(f"{path} holds a {metadata['family']} network, not a text-to-image one; use "
                         f"`pixeldit-bench sample` for class-conditional models")
    encoder_name = text_encoder or (metadata.get("text") or {}).get("encoder")
    if encoder_name is None:
        raise ValueError(f"{path} does not record its text encoder; pass --text-encoder")
    return NetworkPlan(path, config, "ema" if "ema" in present else "net", encoder_name, metadata.get("resolution"))


def load_generator(plan: NetworkPlan, negative_prompt: str, device: torch.device, autocast_bf16: bool) -> T2IGenerator:
    """The network's weights (in the samplers' convention) with its text encoder and the null embedding."""
    model, _ = load_network(plan.path, which=plan.which)
    encoder = get_text_encoder(plan.text_encoder, device=device, max_length=plan.config.text_max_length)
    if encoder.dim != plan.config.text_dim:
        raise ValueError(f"text encoder {plan.text_encoder} gives {encoder.dim}-d tokens but "
                         f"{plan.config.name or 'the model'} takes {plan.config.text_dim}-d; pass the --text-encoder "
                         f"it was trained with")
    null_tokens, null_mask = encoder.encode_negative([negative_prompt])
    return T2IGenerator(DataTimeVelocity(model.float().eval().to(device)), encoder,
                        (null_tokens.to(device), null_mask.to(device)), device, autocast_bf16)


# ------------------------------------------------------------------------------------------------
# Shards


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as temp:
        Image.fromarray(image).save(temp, format="PNG")


def write_shard_images(prompt_set: PromptSet, out_dir: Path, first: int, last: int,
                       images: np.ndarray, samples_per_prompt: int) -> list[Path]:
    """Save the images (prompts first..last, samples_per_prompt each, in that order) in the set's layout."""
    per_prompt = images.reshape(last - first + 1, samples_per_prompt, *images.shape[1:])   # (P, S, H, W, 3)
    if prompt_set.layout == "npz":
        labels = np.repeat([prompt_set.items[p].label for p in range(first, last + 1)], samples_per_prompt)
        path = shard_file(out_dir, first, last)
        save_npz_atomic(path, arr_0=images, arr_1=labels.astype(np.int64))
        return [path]
    written = []
    for offset, tiles in enumerate(per_prompt):
        item = prompt_set.items[first + offset]
        if prompt_set.layout == "dpg":
            written.append(write_grid(out_dir, item.name, list(tiles)))
            continue
        for j, tile in enumerate(tiles):
            path = sample_path(out_dir, first + offset, j)
            _write_png(path, tile)
            written.append(path)
    return written


def generation_settings(prompt_set: PromptSet, sampler: Sampler, seed: int, network_sha256: str, which: str,
                        resolution: int, text_encoder: str, negative_prompt: str, samples_per_prompt: int,
                        quantization: str, autocast_bf16: bool) -> dict:
    """What makes two shards interchangeable; every sidecar records it."""
    return {"prompt_set": prompt_set.name, "prompts_sha256": prompt_set.sha256(), "samples_per_prompt": samples_per_prompt,
            "sampler": sampler.key, "seed": seed, "network_sha256": network_sha256, "weights": which,
            "resolution": resolution, "text_encoder": text_encoder, "negative_prompt": negative_prompt,
            "quantization": quantization, "precision": "bf16-autocast" if autocast_bf16 else "fp32", "noise": NOISE_RULE}


def generate_prompt_set(network: str | os.PathLike, out_dir: str | os.PathLike, prompt_set: str, sampler: Sampler,
                        seed: int = 0, *, samples_per_prompt: int | None = None, shard_size: int = 50,
                        shard_ids: Sequence[int] | None = None, batch_size: int = 8, resolution: int | None = None,
                        text_encoder: str | None = None, negative_prompt: str = "",
                        device: str | torch.device | None = None, autocast_bf16: bool = False,
                        quantization: str = "round") -> dict:
    """Fill the shards (`shard_size` prompts each; all, or `shard_ids`, under torchrun this rank's share) of a
    prompt set with samples, skipping complete ones. Returns {"written": [...], "skipped": [...]} (sidecar names);
    `finish_prompt_set` checks the whole set afterwards."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    prompts = load_prompt_set(prompt_set)
    fixed = load_task(prompts.name)["samples_per_prompt"] if prompts.layout != "npz" else None
    if samples_per_prompt is None:
        samples_per_prompt = fixed or CAPTION_SET_SAMPLES_PER_PROMPT
    if fixed is not None and samples_per_prompt != fixed:
        raise ValueError(f"{prompts.name} is scored on {fixed} samples per prompt, not "
                         f"{samples_per_prompt}; drop --samples-per-prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    shards = shard_ranges(len(prompts.items), shard_size)
    mine = [shards[i] for i in ranks_shard_ids(len(shards), shard_ids,
                                               f"{prompts.name} has {len(shards)} shards of {shard_size} prompts")]

    plan = plan_network(network, text_encoder)
    resolution = resolution or plan.resolution
    if resolution is None:
        raise ValueError(f"{plan.path} does not record its resolution; pass --resolution")
    if resolution % plan.config.patch_size:
        raise ValueError(f"resolution {resolution} is not a multiple of the model's patch size {plan.config.patch_size}")
    out_dir = Path(out_dir)
    settings = generation_settings(prompts, sampler, seed, sha256_file(plan.path), plan.which, resolution,
                                   plan.text_encoder, negative_prompt, samples_per_prompt, quantization, autocast_bf16)
    pending = pending_shards(out_dir, mine, settings, refuse_foreign=False)   # other settings: redo those shards
    result = {"written": [sidecar_path(out_dir, a, b).name for a, b in pending],
              "skipped": [sidecar_path(out_dir, a, b).name for a, b in mine if (a, b) not in pending]}
    if not pending:   # nothing to do: never load a 1.3B model and its encoder to skip every shard
        return result
    check_disk_space(out_dir, sum(b - a + 1 for a, b in pending) * samples_per_prompt * resolution ** 2 * 3,
                     f"generating {len(pending)} shards")
    device = resolve_device(device)
    generator = load_generator(plan, negative_prompt, device, autocast_bf16)
    if prompts.layout == "geneval":
        write_prompt_folders(out_dir, [item.metadata for item in prompts.items])   # metadata.jsonl per prompt

    progress = Progress(sum(last - first + 1 for first, last in pending) * samples_per_prompt, f"t2i {prompts.name}")
    for first, last in pending:
        log.info("generating prompts %d..%d of %s", first, last, prompts.name)
        condition = generator.encode([prompts.items[p].prompt for p in range(first, last + 1)])   # once per shard
        keys = [(p, j) for p in range(first, last + 1) for j in range(samples_per_prompt)]
        images = np.empty((len(keys), resolution, resolution, 3), dtype=np.uint8)
        for start in range(0, len(keys), batch_size):
            batch = keys[start:start + batch_size]
            noise = sample_noise(seed, [f"{p}/{j}" for p, j in batch], (3, resolution, resolution))  # (b, 3, H, W)
            rows = condition.select([p - first for p, _ in batch])
            images[start:start + len(batch)] = generator.images(sampler, rows, noise, quantization)
            progress.update(len(batch))
        written = write_shard_images(prompts, out_dir, first, last, images, samples_per_prompt)
        write_sidecar(out_dir, first, last, settings, written, sampler_config=dataclasses.asdict(sampler),
                      network=str(plan.path), device=str(device), torch=torch.__version__)
    progress.close()
    return result


def check_prompt_set(out_dir: str | os.PathLike) -> dict:
    """Check that the shards' sidecars tile the whole prompt set with one set of settings and that every file
    they list is intact; returns the card `finish_prompt_set` writes. Loads no model."""
    out_dir = Path(out_dir)
    shards = verified_shards(out_dir, unit="prompts", command=GENERATE_COMMAND)
    settings = shards[0].sidecar["settings"]
    prompts = load_prompt_set(settings["prompt_set"])
    if settings["prompts_sha256"] != prompts.sha256():
        raise ValueError(f"{out_dir} was generated from another version of the {prompts.name} prompts; regenerate it")
    if shards[-1].last + 1 != len(prompts.items):
        raise ValueError(f"prompts {shards[-1].last + 1}..{len(prompts.items) - 1} of {prompts.name} are not "
                         f"generated yet; run {GENERATE_COMMAND} for them")
    return {"schema": SAMPLES_SCHEMA, "prompt_set": prompts.name, "layout": prompts.layout,
            "count": len(prompts.items) * settings["samples_per_prompt"], "settings": settings,
            "sampler_config": shards[0].sidecar["sampler_config"], "network": shards[0].sidecar["network"],
            "shards": [[shard.first, shard.last] for shard in shards]}


def finish_prompt_set(out_dir: str | os.PathLike) -> Path:
    """After `check_prompt_set`: merge a caption set's shards into samples.npz (arr_0 the images, arr_1 the class
    each prompt asked for, in prompt order), and write samples.json."""
    out_dir = Path(out_dir)
    card = check_prompt_set(out_dir)
    if card["layout"] == "npz":
        merged = merge_npz(out_dir / "samples.npz", [shard_file(out_dir, first, last) for first, last in card["shards"]])
        card.update(file=merged.name, sha256=sha256_file(merged))
    return write_json_atomic(out_dir / "samples.json", card)
