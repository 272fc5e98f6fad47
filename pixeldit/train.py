"""Training loop for PixelDiT and the latent baselines with rectified flow, REPA, EMA and exact self-resume.

Read top to bottom: config -> setup (distributed, run dir, data, model, EMA, optimiser, resume) -> loop ->
snapshots. Budgets are in kimg (thousands of training images), so schedules do not depend on the GPU count.

Run directory (README, "Results layout"):
    config.json                      the resolved TrainConfig (a rerun with different values is refused)
    log.txt, stats.jsonl             human log; one JSON line per log interval (kimg, loss, grad norm, lr, ...)
    training-state-<kimg>.pt         model, EMA, optimiser, data position, RNG: what resume needs
    network-snapshot-<kimg>.safetensors   net + EMA weights with the model config (what sampling reads)
Rerunning the same command resumes from the newest complete training state; files are written to a
temporary name, fsynced and renamed, so a killed job never leaves a half file that looks complete.

Latent runs (`latent={"cache": DIR, "autoencoder": NAME_OR_DIR}`, a LatentDiT model): the loop is the same,
on cached autoencoder latents instead of images; snapshots record the autoencoder, which sampling decodes with.

Text-to-image runs (`text={"encoder": "all-minilm-l6-v2", "captions": "digits"}`, a PixelDiT-T2I model): each
image's label picks one of its class captions per step; the captions are embedded once into
`captions.safetensors` in the run directory (the encoder never runs in the loop, nor again on resume), and
`label_dropout` becomes text dropout to the null ("") embedding. The model is trained in this module's flow
convention through `DataTimeVelocity`; snapshots record the text encoder, which generation uses.

All randomness of step k (times, noise, label dropout) comes from generators seeded by (seed, k), drawn
for the whole global batch and sliced per rank: a resumed run, or one on another number of processes,
sees exactly the same numbers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import types
import typing
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pixeldit import flow
from pixeldit.data import ImageBatches, open_dataset, to_model_range
from pixeldit.data.captions import cached_caption_embeddings
from pixeldit.data.latent_cache import open_latent_cache
from pixeldit.infra.devices import local_rank, peak_memory_mib, setup_distributed
from pixeldit.infra.progress import Progress
from pixeldit.infra.runs import load_newest_training_state, save_training_state, snapshot_path
from pixeldit.models import ABLATION_LADDER, build_network, family_of, models_in, save_network
from pixeldit.models.autoencoder import load_autoencoder
from pixeldit.models.io import load_state, read_network_header, verify_network_data
from pixeldit.models.t2i import DataTimeVelocity
from pixeldit.presets import get_preset
from pixeldit.repa import ENCODERS, RepaProjector, repa_loss


@dataclasses.dataclass
class TrainConfig:
    preset: str
    model: str
    dataset: str
    resolution: int
    num_classes: int
    total_kimg: int
    batch_size: int                       # global batch (all processes, all accumulation rounds)
    batch_gpu: int | None = None          # per-process micro-batch; None = batch_size / world_size
    ablation: str | None = None
    model_overrides: dict = dataclasses.field(default_factory=dict)
    lr: float = 1e-4
    lr_schedule: list = dataclasses.field(default_factory=list)          # [[from_kimg, lr], ...]
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    grad_clip_schedule: list = dataclasses.field(default_factory=list)   # [[from_kimg, max_norm], ...]
    ema_decay: float | None = None        # per-step decay (ImageNet: 0.9999) ...
    ema_halflife_kimg: float | None = None  # ... or EDM-style half-life in kimg, for short runs
    ema_rampup: float | None = None       # half-life at most rampup * images seen so far
    t_mean: float = 0.0
    t_std: float = 1.0
    time_shift: float = 1.0
    label_dropout: float = 0.1
    prediction: str = "v"
    repa: dict | None = None              # {"encoder": name, "align_layer": 8, "weight": 0.5}
    flip: bool = False
    precision: str = "fp32"               # "bf16" autocast on CUDA
    compile: bool = False
    deterministic: bool = False
    spike_factor: float = 0.0             # > 0: a loss above factor x its running mean is a spike
    skip_spikes: bool = False             # ... and its update is skipped
    snapshot_kimg: int = 50
    state_kimg: int = 10
    log_every: int = 50                   # steps
    seed: int = 0
    init_from: str | None = None          # network file or run dir to start from (e.g. 512² from 256²)
    latent: dict | None = None            # {"cache": latent cache dir, "autoencoder": "sd-vae-ft-ema" | AE dir}
    text: dict | None = None              # {"encoder": "all-minilm-l6-v2", "captions": "digits"} for a T2I model

    def __post_init__(self):
        _check_field_types(self)
        if self.ablation is not None and self.ablation not in ABLATION_LADDER:
            raise ValueError(f"unknown ablation rung {self.ablation!r}; known: {', '.join(ABLATION_LADDER)}")
        for name in ("batch_size", "lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
        if self.total_kimg < 1:   # 0 would exit 0 naming a snapshot it never wrote
            raise ValueError(f"total_kimg={self.total_kimg}: the training budget must be at least 1 kimg")
        if self.prediction not in flow.PREDICTIONS:
            raise ValueError(f"prediction must be one of {flow.PREDICTIONS}, got {self.prediction!r}")
        if (self.ema_decay is None) == (self.ema_halflife_kimg is None):
            raise ValueError("set exactly one of ema_decay and ema_halflife_kimg")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        self.betas = tuple(self.betas)
        if self.latent is not None:
            missing = sorted({"cache", "autoencoder"} - set(self.latent))
            if missing:
                raise ValueError(f"latent needs the keys 'cache' and 'autoencoder'; missing {missing}")
            if family_of(self.model) != "latent-dit":
                raise ValueError(f"latent training needs a latent model ({', '.join(models_in('latent-dit'))}), "
                                 f"not {self.model!r}")
            if self.ablation or self.repa:
                raise ValueError("ablation and repa apply to PixelDiT only; unset them for a latent run")
        elif family_of(self.model) == "latent-dit":
            raise ValueError(f"{self.model} works on autoencoder latents: set latent={{'cache': ..., 'autoencoder': ...}}")
        if self.text is not None:
            missing = sorted({"encoder", "captions"} - set(self.text))
            if missing:
                raise ValueError(f"text needs the keys 'encoder' and 'captions'; missing {missing}")
            if family_of(self.model) != "pixeldit-t2i":
                raise ValueError(f"text-to-image training needs a T2I model ({', '.join(models_in('pixeldit-t2i'))}), "
                                 f"not {self.model!r}")
            if self.ablation or self.repa or self.latent or self.prediction != "v":
                raise ValueError("a T2I run trains PixelDiT-T2I with v-prediction in pixel space: unset ablation, "
                                 "repa and latent, and keep prediction='v'")
        elif family_of(self.model) == "pixeldit-t2i":
            raise ValueError(f"{self.model} is text-conditioned: set text={{'encoder': ..., 'captions': ...}}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrainConfig":
        values = {"preset": name, **get_preset(name)}
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; see `pixeldit-bench train --help`")
        values.update(overrides)
        return cls(**values)

    def run_name(self) -> str:
        return f"{self.preset}-{self.seed}"


def _fits(value, expected) -> bool:
    if expected is type(None):
        return value is None
    if expected is float:                       # JSON's 2 is a fine learning rate; True is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is tuple:
        return isinstance(value, (tuple, list))
    return isinstance(value, typing.get_origin(expected) or expected)


def _check_field_types(config: "TrainConfig") -> None:
    """Every field has its annotated type (a `--set lr=fast` is refused here, before a run folder is made)."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        expected = hints[field.name]
        allowed = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
        value = getattr(config, field.name)
        if not any(_fits(value, kind) for kind in allowed):
            names = " or ".join("null" if kind is type(None) else getattr(kind, "__name__", str(kind))
                                for kind in allowed)
            raise ValueError(f"{field.name}={value!r} is not of type {names} (from the preset or --set "
                             f"{field.name}=...)")


# Settings a resumed run may change without invalidating its state.
RESUMABLE_CHANGES = {"total_kimg", "snapshot_kimg", "state_kimg", "log_every", "compile", "batch_gpu"}


def scheduled(base: float | None, schedule: list, kimg: float) -> float | None:
    """Piecewise-constant value: the last [from_kimg, value] entry reached, else the base value."""
    value = base
    for start, entry in sorted(schedule):
        if kimg >= start:
            value = entry
    return value


def ema_decay(config: TrainConfig, batch: int, nimg: int) -> float:
    if config.ema_decay is not None:
        return config.ema_decay
    halflife = config.ema_halflife_kimg * 1000
    if config.ema_rampup is not None:
        halflife = min(halflife, max(nimg, batch) * config.ema_rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: stable across runs and platforms)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0]) >> 1


def step_randomness(config: TrainConfig, step: int, positions: range, device: torch.device,
                    shape: tuple[int, ...] | None = None):
    """Times, label-drop mask and noise of training step `step` for the global-batch `positions` this rank owns.

    Times and drops are drawn for the whole global batch (a few floats) and sliced; each sample's noise has
    its own generator seeded by (seed, step, position), so no rank draws noise it does not use. `shape` is
    one sample's shape: (C, h, w) latents, or by default the image (3, resolution, resolution).
    """
    generator = torch.Generator().manual_seed(_seed(config.seed, step, 0))
    t = flow.sample_timesteps(config.batch_size, generator, config.t_mean, config.t_std, config.time_shift)
    drop = torch.rand(config.batch_size, generator=generator) < config.label_dropout
    shape = shape or (3, config.resolution, config.resolution)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator(device).manual_seed(_seed(config.seed, step, 1, i)),
                                     device=device) for i in positions])          # (B_rank, *shape)
    index = torch.tensor(list(positions))
    return t[index].to(device), drop[index].to(device), noise


def caption_choice(config: TrainConfig, step: int, positions: range, per_class: int) -> torch.Tensor:
    """Which of its class's captions each sample of step `step` gets; its own generator, so class-conditional
    runs draw exactly the numbers they drew before captions existed."""
    generator = torch.Generator().manual_seed(_seed(config.seed, step, 2))
    choice = torch.randint(per_class, (config.batch_size,), generator=generator)
    return choice[torch.tensor(list(positions))]


def train(config: TrainConfig, run_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Train (or resume) until config.total_kimg; returns the final network snapshot."""
    rank, world_size, device = setup_distributed()
    is_main = rank == 0
    run_dir = Path(run_dir)
    final_snapshot = snapshot_path(run_dir, config.total_kimg)
    batch_per_rank, batch_gpu = _batch_split(config, world_size)   # checked before the run folder is written
    data = training_data(config, device)           # images, latents or captioned images; verified before writing
    log = _open_run_dir(config, run_dir, is_main)

    # ---------------------------------------------------------------- model, EMA, optimiser, REPA
    torch.manual_seed(config.seed)
    classes = {} if config.text else {"num_classes": config.num_classes}
    net = build_network(config.model, config.ablation, **classes, **config.model_overrides).to(device)
    ema = build_network(net.config).to(device).requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    repa = Repa(config.repa, net, device) if config.repa else None
    params = list(net.parameters()) + (list(repa.projector.parameters()) if repa else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    data.prepare(net, run_dir, is_main, world_size)

    # ---------------------------------------------------------------- resume
    state = _resume(config, run_dir, net, ema, optimizer, repa, log)
    if state["nimg"] >= config.total_kimg * 1000:
        if _snapshot_usable(final_snapshot, log):
            log(f"{run_dir} already trained to {config.total_kimg} kimg; nothing to do")
        elif is_main:
            _save_snapshot(config, run_dir, config.total_kimg, state["nimg"], net, ema, data.snapshot_record)
            log(f"rewrote {final_snapshot.name} from the final training state")
        return final_snapshot
    nimg, step, loss_mean = state["nimg"], state["step"], state["loss_mean"]
    batches = ImageBatches(data.dataset, batch_per_rank, seed=config.seed, rank=rank, world_size=world_size,
                           flip=config.flip)
    if state["loader"] is not None:
        batches.load_state_dict(state["loader"])
    model = data.wrap(net)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)
    log(f"{config.run_name()}: {sum(p.numel() for p in net.parameters()):,} params, {world_size} process(es), "
        f"global batch {config.batch_size}, budget {config.total_kimg} kimg, device {device}")

    # ---------------------------------------------------------------- loop
    bar = Progress(config.total_kimg * 1000, "train", initial=nimg, scale=1000, scaled_unit="kimg", write=log,
                   lines=True, enabled=progress and is_main)
    window = _LogWindow()
    next_state = (nimg // (config.state_kimg * 1000) + 1) * config.state_kimg * 1000
    next_snapshot = (nimg // (config.snapshot_kimg * 1000) + 1) * config.snapshot_kimg * 1000
    positions = range(rank, config.batch_size, world_size)   # rank r owns items r, r + W, ... of each global batch
    while nimg < config.total_kimg * 1000:
        kimg = nimg / 1000
        lr = scheduled(config.lr, config.lr_schedule, kimg)
        clip = scheduled(config.grad_clip, config.grad_clip_schedule, kimg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)                        # (B_rank, 3, H, W) uint8 or (B_rank, C, h, w) latents
        t, drop, noise = step_randomness(config, step, positions, device, data.sample_shape)
        x = data.model_input(images)                          # (B_rank, *sample_shape)
        condition = data.condition(labels, drop, step, positions)
        losses = _accumulate_gradients(config, model, optimizer, repa, x, noise, t, condition, batch_gpu,
                                       world_size, device)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf")).item()
        spike = bool(config.spike_factor and loss_mean is not None and losses[0] > config.spike_factor * loss_mean)
        if spike:
            log(f"loss spike at step {step} ({kimg:.3f} kimg): {losses[0]:.4f} vs running mean {loss_mean:.4f}"
                + ("; update skipped" if config.skip_spikes else ""))
        if not (spike and config.skip_spikes) and math.isfinite(grad_norm):
            optimizer.step()
            _update_ema(ema, net, ema_decay(config, config.batch_size, nimg))
            loss_mean = losses[0] if loss_mean is None else 0.99 * loss_mean + 0.01 * losses[0]
        nimg += config.batch_size
        step += 1
        bar.update(config.batch_size, loss=loss_mean if loss_mean is not None else losses[0])
        window.add(*losses, grad_norm, spike)

        # ------------------------------------------------------------ logging, states, snapshots
        done = nimg >= config.total_kimg * 1000
        if step % config.log_every == 0 or done:
            record = window.flush(nimg, step, lr, clip, config.batch_size, peak_memory_mib(device))
            log.stats(record)
        if nimg >= next_snapshot or done:
            if is_main:
                _save_snapshot(config, run_dir, config.total_kimg if done else next_snapshot // 1000, nimg, net, ema,
                               data.snapshot_record)
            next_snapshot += config.snapshot_kimg * 1000
        if nimg >= next_state or done:
            if is_main:
                state = {"net": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                         "projector": repa.projector.state_dict() if repa else None,
                         "nimg": nimg, "step": step, "loader": batches.state_dict(), "loss_mean": loss_mean,
                         "torch_rng": torch.get_rng_state()}
                save_training_state(state, run_dir, config.total_kimg if done else next_state // 1000)
            next_state += config.state_kimg * 1000
        if world_size > 1:
            dist.barrier()
    bar.close()
    log(f"finished {config.total_kimg} kimg at step {step}: {final_snapshot.name}")
    return final_snapshot


# ------------------------------------------------------------------------------------------------
# Setup and resume


def _open_run_dir(config: TrainConfig, run_dir: Path, is_main: bool) -> "_Logger":
    """Create the run directory, refuse a rerun with other settings, store the config; returns the logger."""
    config_path = run_dir / "config.json"
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config_path.exists():
            stored = json.loads(config_path.read_text())
            current = json.loads(json.dumps(dataclasses.asdict(config)))
            changed = {k: (stored.get(k), v) for k, v in current.items()
                       if stored.get(k) != v and k not in RESUMABLE_CHANGES}
            if changed:
                raise ValueError(f"{run_dir} was started with other settings {changed} (stored, now); "
                                 f"use another --out or the original settings to resume")
        config_path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    return _Logger(run_dir, is_main)


def _snapshot_usable(path: Path, log: "_Logger") -> bool:
    """Whether the final snapshot is there and its weights match their checksum (saying why not)."""
    if not path.exists():
        log(f"{path.name} is missing; it is rewritten from the final training state")
        return False
    try:
        verify_network_data(path)
    except ValueError as error:
        log(f"{error}; it is rewritten from the final training state")
        return False
    return True


def _batch_split(config: TrainConfig, world_size: int) -> tuple[int, int]:
    """(images per process per step, images per forward pass)."""
    if config.batch_size % world_size:
        raise ValueError(f"global batch {config.batch_size} is not divisible by {world_size} processes")
    batch_per_rank = config.batch_size // world_size
    batch_gpu = config.batch_gpu or batch_per_rank
    if batch_per_rank % batch_gpu:
        raise ValueError(f"per-process batch {batch_per_rank} is not divisible by batch_gpu {batch_gpu}")
    return batch_per_rank, batch_gpu


def _resume(config: TrainConfig, run_dir: Path, net, ema, optimizer, repa: "Repa | None", log: "_Logger") -> dict:
    """Load the newest complete training state (or initialise from `init_from`); returns the loop's counters."""
    counters = {"nimg": 0, "step": 0, "loader": None, "loss_mean": None}
    newest = load_newest_training_state(run_dir, log)
    if newest is not None:
        state_file, state = newest
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if repa is not None:
            repa.projector.load_state_dict(state["projector"])
        counters = {key: state[key] for key in counters}
        torch.set_rng_state(state["torch_rng"])
        log.truncate_stats(after_step=counters["step"])  # drop records of steps the killed run made after this state
        log(f"resumed from {state_file.name} at {counters['nimg'] / 1000:.3f} kimg, step {counters['step']}")
    elif config.init_from:
        source = _latest_snapshot(Path(config.init_from))
        for model, which in ((net, "net"), (ema, "ema")):
            model.load_state_dict(load_state(source, which))
        log(f"initialised from {source}")
    return counters


# ------------------------------------------------------------------------------------------------
# Data and conditioning, one object per model family


class PixelImages:
    """Class-conditional training on uint8 images (PixelDiT and its ablation ladder)."""

    snapshot_record: dict | None = None   # what a snapshot records about the data beyond the config

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config, self.device = config, device
        self.dataset = self._open()
        if self.dataset.resolution != config.resolution:
            raise ValueError(f"{self.source} is {self.dataset.resolution}px but the config says {config.resolution}px")
        self.sample_shape = (3, config.resolution, config.resolution)     # one training sample (and its noise)

    @property
    def source(self) -> str:
        return f"dataset {self.config.dataset}"

    def _open(self):
        # Every shard's sha256 against the manifest before the first step, so a damaged shard is refused, not
        # trained on: one read of the data (measured in the README), by one process per machine.
        return open_dataset(self.config.dataset, split="train", checksums=local_rank() == 0)

    def prepare(self, net, run_dir: Path, is_main: bool, world_size: int) -> None:
        """Checks and caches that need the built model; nothing for images."""

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        return net

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        return to_model_range(images.to(self.device))

    def condition(self, labels: torch.Tensor, drop: torch.Tensor, step: int, positions: range) -> tuple:
        return (flow.drop_labels(labels.to(self.device), drop, self.config.num_classes),)     # (B_rank,)


class LatentCache(PixelImages):
    """Class-conditional training of a latent baseline on cached autoencoder latents."""

    @property
    def source(self) -> str:
        return f"latent cache {self.config.latent['cache']}"

    def _open(self):
        dataset, self.snapshot_record = _open_latents(self.config)
        return dataset

    def prepare(self, net, run_dir: Path, is_main: bool, world_size: int) -> None:
        self.sample_shape = (net.config.in_channels, net.config.input_size, net.config.input_size)
        if self.dataset.latent_shape != self.sample_shape:
            raise ValueError(f"latent cache {self.config.latent['cache']} holds latents {self.dataset.latent_shape} "
                             f"but {self.config.model} takes {self.sample_shape}; set model_overrides (input_size, "
                             f"in_channels) or use a cache of matching images and autoencoder")

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.to(self.device)   # already scaled to about unit variance by the autoencoder's latent scaling


class CaptionedImages(PixelImages):
    """Text-to-image training: each image's label picks one of its class captions per step."""

    def prepare(self, net, run_dir: Path, is_main: bool, world_size: int) -> None:
        text = self.config.text
        caption_args = (run_dir / "captions.safetensors", text["captions"], text["encoder"], net.config.text_max_length)
        if is_main:  # the encoder runs once, on rank 0; the others read its file
            cached_caption_embeddings(*caption_args)
        if world_size > 1:
            dist.barrier()
        self.captions = cached_caption_embeddings(*caption_args).to(self.device)
        if self.captions.tokens.shape[0] != self.config.num_classes:
            raise ValueError(f"caption set {text['captions']!r} has {self.captions.tokens.shape[0]} classes but the "
                             f"config says num_classes={self.config.num_classes}")

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        # The T2I model's own time and target are SANA's (t = 1000·sigma, eps - x): train it in this convention.
        return DataTimeVelocity(net)

    def condition(self, labels: torch.Tensor, drop: torch.Tensor, step: int, positions: range) -> tuple:
        choice = caption_choice(self.config, step, positions, self.captions.tokens.shape[1])
        return self.captions.pick(labels.to(self.device), choice.to(self.device), drop)  # (B_rank, T, d), (B_rank, T)


def training_data(config: TrainConfig, device: torch.device) -> PixelImages:
    if config.latent:
        return LatentCache(config, device)
    return CaptionedImages(config, device) if config.text else PixelImages(config, device)


class Repa:
    """REPA: align an early patch block's tokens with a frozen encoder's features through a projector."""

    def __init__(self, settings: dict, net: torch.nn.Module, device: torch.device):
        self.settings = settings
        self.encoder = ENCODERS[settings["encoder"]](device)
        self.projector = RepaProjector(net.config.hidden_size, self.encoder.embed_dim,
                                       settings.get("projector_dim")).to(device)
        self.tokens: list[torch.Tensor] = []
        net.patch_blocks[settings["align_layer"] - 1].register_forward_hook(
            lambda _module, _inputs, output: self.tokens.append(output))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The alignment loss of the last forward pass, whose images in [-1, 1] were `x`."""
        return repa_loss(self.tokens[0], self.projector, self.encoder((x + 1) / 2))


# ------------------------------------------------------------------------------------------------
# One optimisation step


def _accumulate_gradients(config: TrainConfig, model, optimizer, repa: Repa | None, x: torch.Tensor,
                          noise: torch.Tensor, t: torch.Tensor, condition: tuple, batch_gpu: int, world_size: int,
                          device: torch.device) -> tuple[float, float, float]:
    """Forward and backward over this process's batch in micro-batches of `batch_gpu`; returns the global batch's
    mean (loss, flow-matching loss, REPA loss)."""
    autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                    enabled=config.precision == "bf16" and device.type == "cuda")
    optimizer.zero_grad(set_to_none=True)
    step_loss = step_fm = step_repa = 0.0
    rounds = len(x) // batch_gpu
    for r in range(rounds):
        part = slice(r * batch_gpu, (r + 1) * batch_gpu)
        x_t, v_target = flow.interpolate(x[part], noise[part], t[part])
        if repa is not None:
            repa.tokens.clear()
        sync = world_size == 1 or r == rounds - 1
        no_sync = model.no_sync() if not sync and hasattr(model, "no_sync") else contextlib.nullcontext()
        with no_sync, torch.autocast(**autocast):
            output = model(x_t, t[part], *(c[part] for c in condition))
            fm_loss = F.mse_loss(flow.velocity_from_output(output.float(), x_t, t[part], config.prediction), v_target)
            loss = fm_loss
            if repa is not None:
                align = repa.loss(x[part])
                loss = loss + config.repa["weight"] * align
                step_repa += align.item() / rounds
            (loss / rounds).backward()
        step_loss += loss.item() / rounds
        step_fm += fm_loss.item() / rounds
    if world_size > 1:  # the logged loss is the global batch's mean
        reduced = torch.tensor([step_loss, step_fm, step_repa], device=device)
        dist.all_reduce(reduced)
        step_loss, step_fm, step_repa = (reduced / world_size).tolist()
    return step_loss, step_fm, step_repa


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, net: torch.nn.Module, beta: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - beta)


# ------------------------------------------------------------------------------------------------
# Checkpoints and logs


def _save_snapshot(config: TrainConfig, run_dir: Path, kimg: int, nimg: int, net, ema, latent_record: dict | None):
    save_network(snapshot_path(run_dir, kimg), net.config, net=net.state_dict(), ema=ema.state_dict(),
                 metadata={"kimg": kimg, "nimg": nimg, "run": config.run_name(), "resolution": config.resolution,
                           "prediction": config.prediction, "latent": latent_record, "text": config.text,
                           "train_config": dataclasses.asdict(config)})


class _LogWindow:
    """Means of the losses and gradient norm over the steps since the last stats record."""

    KEYS = ("loss", "fm_loss", "repa_loss", "grad_norm")

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.sums, self.steps, self.spikes, self.start = dict.fromkeys(self.KEYS, 0.0), 0, 0, time.time()

    def add(self, loss: float, fm_loss: float, repa_loss: float, grad_norm: float, spike: bool) -> None:
        for key, value in zip(self.KEYS, (loss, fm_loss, repa_loss, grad_norm)):
            self.sums[key] += value
        self.steps += 1
        self.spikes += spike

    def flush(self, nimg: int, step: int, lr: float, clip: float | None, batch_size: int, memory_mib: float) -> dict:
        elapsed = time.time() - self.start
        record = {"kimg": nimg / 1000, "step": step, "lr": lr, "grad_clip": clip,
                  **{key: self.sums[key] / self.steps for key in self.KEYS},
                  "spikes": self.spikes, "images_per_second": self.steps * batch_size / elapsed,
                  "peak_memory_mib": memory_mib}
        self._reset()
        return record


def _open_latents(config: TrainConfig):
    """The latent cache of a latent run, checked against its autoencoder, and the record snapshots keep of both."""
    # Loading the autoencoder here (not only at sampling) refuses a cache of another autoencoder before training.
    autoencoder = load_autoencoder(config.latent["autoencoder"])
    dataset = open_latent_cache(config.latent["cache"], autoencoder)
    if dataset.split != "train":
        raise ValueError(f"latent cache {config.latent['cache']} holds the {dataset.split!r} split; train on 'train'")
    record = {**config.latent, "autoencoder_fingerprint": dataset.autoencoder_fingerprint,
              "latent_shape": list(dataset.latent_shape)}
    return dataset, record


def _latest_snapshot(path: Path) -> Path:
    if path.is_file():
        read_network_header(path)
        return path
    snapshots = sorted(path.glob("network-snapshot-*.safetensors"))
    if not snapshots:
        raise FileNotFoundError(f"{path} holds no network-snapshot-*.safetensors to initialise from")
    return snapshots[-1]


class _Logger:
    """Rank-0 log: messages to log.txt (and stdout), records to stats.jsonl."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir, self.enabled = run_dir, enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
            print(line, flush=True)
            with open(self.run_dir / "log.txt", "a") as handle:
                handle.write(line + "\n")

    def truncate_stats(self, after_step: int) -> None:
        path = self.run_dir / "stats.jsonl"
        if self.enabled and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= after_step]
            path.write_text("".join(line + "\n" for line in kept))

    def stats(self, record: dict) -> None:
        if self.enabled:
            with open(self.run_dir / "stats.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

