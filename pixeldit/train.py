"""Training loop for PixelDiT and the latent baselines with rectified flow, REPA, EMA and exact self-resume.

Read top to bottom: config -> setup (distributed, run dir, data, model, EMA, optimiser, resume) -> loop ->
snapshots. Budgets are in kimg (thousands of training images), so schedules do not depend on the GPU count.

Run directory (DESIGN.md §2):
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
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pixeldit import flow
from pixeldit.data.latent_cache import open_latent_cache
from pixeldit.infra.devices import setup_distributed
from pixeldit.infra.files import atomic_torch_save
from pixeldit.infra.runs import latest_state, snapshot_path
from pixeldit.models import build_network, family_of, models_in, save_network
from pixeldit.models.autoencoder import load_autoencoder
from pixeldit.models.io import load_state, read_network_header
from pixeldit.models.t2i import DataTimeVelocity


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
        from pixeldit.presets import get_preset

        values = {"preset": name, **get_preset(name)}
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; see `pixeldit-bench train --help`")
        values.update(overrides)
        return cls(**values)

    def run_name(self) -> str:
        return f"{self.preset}-{self.seed}"


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
    from pixeldit.data import ImageBatches, open_dataset, to_model_range

    rank, world_size, device = setup_distributed()
    is_main = rank == 0
    run_dir = Path(run_dir)
    final_snapshot = snapshot_path(run_dir, config.total_kimg)

    # ---------------------------------------------------------------- run directory and config
    config_path = run_dir / "config.json"
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config_path.exists():
            stored = json.loads(config_path.read_text())
            current = json.loads(json.dumps(dataclasses.asdict(config)))
            changed = {k: (stored.get(k), v) for k, v in current.items() if stored.get(k) != v and k not in RESUMABLE_CHANGES}
            if changed:
                raise ValueError(f"{run_dir} was started with other settings {changed} (stored, now); "
                                 f"use another --out or the original settings to resume")
        config_path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    log = _Logger(run_dir, is_main)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)

    # ---------------------------------------------------------------- data
    latent_record = None
    if config.latent:
        dataset, latent_record = _open_latents(config)
    else:
        dataset = open_dataset(config.dataset, split="train")
    if dataset.resolution != config.resolution:
        source = f"latent cache {config.latent['cache']}" if config.latent else f"dataset {config.dataset}"
        raise ValueError(f"{source} is {dataset.resolution}px but the config says {config.resolution}px")
    if config.batch_size % world_size:
        raise ValueError(f"global batch {config.batch_size} is not divisible by {world_size} processes")
    batch_per_rank = config.batch_size // world_size
    batch_gpu = config.batch_gpu or batch_per_rank
    if batch_per_rank % batch_gpu:
        raise ValueError(f"per-process batch {batch_per_rank} is not divisible by batch_gpu {batch_gpu}")

    # ---------------------------------------------------------------- model, EMA, optimiser, REPA
    torch.manual_seed(config.seed)
    classes = {} if config.text else {"num_classes": config.num_classes}
    net = build_network(config.model, config.ablation, **classes, **config.model_overrides).to(device)
    ema = build_network(net.config).to(device).requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    repa_encoder, projector = None, None
    params = list(net.parameters())
    if config.repa:
        from pixeldit.repa import ENCODERS, RepaProjector

        repa_encoder = ENCODERS[config.repa["encoder"]](device)
        projector = RepaProjector(net.config.hidden_size, repa_encoder.embed_dim, config.repa.get("projector_dim")).to(device)
        params += list(projector.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    sample_shape = (3, config.resolution, config.resolution)        # one training sample (and its noise)
    if config.latent:
        sample_shape = (net.config.in_channels, net.config.input_size, net.config.input_size)
        if dataset.latent_shape != sample_shape:
            raise ValueError(f"latent cache {config.latent['cache']} holds latents {dataset.latent_shape} but "
                             f"{config.model} takes {sample_shape}; set model_overrides (input_size, in_channels) "
                             f"or use a cache of matching images and autoencoder")

    captions = None
    if config.text:
        from pixeldit.data.captions import cached_caption_embeddings

        captions_file = run_dir / "captions.safetensors"
        caption_args = (captions_file, config.text["captions"], config.text["encoder"], net.config.text_max_length)
        if is_main:  # the encoder runs once, on rank 0; the others read its file
            cached_caption_embeddings(*caption_args)
        if world_size > 1:
            dist.barrier()
        captions = cached_caption_embeddings(*caption_args).to(device)
        if captions.tokens.shape[0] != config.num_classes:
            raise ValueError(f"caption set {config.text['captions']!r} has {captions.tokens.shape[0]} classes but the "
                             f"config says num_classes={config.num_classes}")

    nimg, step, loader_state, loss_mean = 0, 0, None, None
    state_file = latest_state(run_dir)
    if state_file is not None:  # resume: the newest complete state
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if projector is not None:
            projector.load_state_dict(state["projector"])
        nimg, step, loader_state, loss_mean = state["nimg"], state["step"], state["loader"], state["loss_mean"]
        torch.set_rng_state(state["torch_rng"])
        log.truncate_stats(after_step=step)  # drop records of steps the killed run made after this state
        log(f"resumed from {state_file.name} at {nimg / 1000:.3f} kimg, step {step}")
    elif config.init_from:
        source = _latest_snapshot(Path(config.init_from))
        for model, which in ((net, "net"), (ema, "ema")):
            model.load_state_dict(load_state(source, which))
        log(f"initialised from {source}")
    if nimg >= config.total_kimg * 1000 and final_snapshot.exists():
        log(f"{run_dir} already trained to {config.total_kimg} kimg; nothing to do")
        return final_snapshot

    batches = ImageBatches(dataset, batch_per_rank, seed=config.seed, rank=rank, world_size=world_size, flip=config.flip)
    if loader_state is not None:
        batches.load_state_dict(loader_state)
    # The T2I model's own time and target are SANA's (t = 1000·sigma, eps - x): train it in this module's convention.
    model = DataTimeVelocity(net) if config.text else net
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)
    ema_params, net_params = list(ema.parameters()), list(net.parameters())
    align_output: list[torch.Tensor] = []
    if projector is not None:
        net.patch_blocks[config.repa["align_layer"] - 1].register_forward_hook(lambda _m, _i, out: align_output.append(out))
    log(f"{config.run_name()}: {sum(p.numel() for p in net.parameters()):,} params, {world_size} process(es), "
        f"global batch {config.batch_size}, budget {config.total_kimg} kimg, device {device}")

    # ---------------------------------------------------------------- loop
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16" and device.type == "cuda")
    bar = _progress(config, nimg, enabled=progress and is_main)
    window = {"loss": 0.0, "fm_loss": 0.0, "repa_loss": 0.0, "grad_norm": 0.0, "steps": 0, "spikes": 0, "start": time.time()}
    next_state = (nimg // (config.state_kimg * 1000) + 1) * config.state_kimg * 1000
    next_snapshot = (nimg // (config.snapshot_kimg * 1000) + 1) * config.snapshot_kimg * 1000
    while nimg < config.total_kimg * 1000:
        kimg = nimg / 1000
        lr = scheduled(config.lr, config.lr_schedule, kimg)
        clip = scheduled(config.grad_clip, config.grad_clip_schedule, kimg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # The loader gives rank r the global batch's items r, r + W, r + 2W, ...; randomness follows the same slots.
        data, labels = next(batches)                          # (B_rank, 3, H, W) uint8 or (B_rank, C, h, w) latents
        t, drop, noise = step_randomness(config, step, range(rank, config.batch_size, world_size), device, sample_shape)
        # Cached latents are already scaled to about unit variance by the autoencoder's latent scaling.
        x = data.to(device) if config.latent else to_model_range(data.to(device))   # (B_rank, *sample_shape)
        if captions is None:
            condition = (flow.drop_labels(labels.to(device), drop, config.num_classes),)     # (B_rank,)
        else:
            choice = caption_choice(config, step, range(rank, config.batch_size, world_size), captions.tokens.shape[1])
            condition = captions.pick(labels.to(device), choice.to(device), drop)           # (B_rank, T, d), (B_rank, T)

        optimizer.zero_grad(set_to_none=True)
        step_loss = step_fm = step_repa = 0.0
        rounds = batch_per_rank // batch_gpu
        for r in range(rounds):
            part = slice(r * batch_gpu, (r + 1) * batch_gpu)
            x_t, v_target = flow.interpolate(x[part], noise[part], t[part])
            align_output.clear()
            sync = world_size == 1 or r == rounds - 1
            with (model.no_sync() if not sync and hasattr(model, "no_sync") else contextlib.nullcontext()), torch.autocast(**autocast):
                output = model(x_t, t[part], *(c[part] for c in condition))
                fm_loss = F.mse_loss(flow.velocity_from_output(output.float(), x_t, t[part], config.prediction), v_target)
                loss = fm_loss
                if projector is not None:
                    from pixeldit.repa import repa_loss
                    target = repa_encoder((x[part] + 1) / 2)
                    align = repa_loss(align_output[0], projector, target)
                    loss = loss + config.repa["weight"] * align
                    step_repa += align.item() / rounds
                (loss / rounds).backward()
            step_loss += loss.item() / rounds
            step_fm += fm_loss.item() / rounds
        if world_size > 1:  # the logged loss is the global batch's mean
            reduced = torch.tensor([step_loss, step_fm, step_repa], device=device)
            dist.all_reduce(reduced)
            step_loss, step_fm, step_repa = (reduced / world_size).tolist()

        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf")).item()
        spike = bool(config.spike_factor and loss_mean is not None and step_loss > config.spike_factor * loss_mean)
        if spike:
            log(f"loss spike at step {step} ({kimg:.3f} kimg): {step_loss:.4f} vs running mean {loss_mean:.4f}"
                + ("; update skipped" if config.skip_spikes else ""))
        if not (spike and config.skip_spikes) and math.isfinite(grad_norm):
            optimizer.step()
            beta = ema_decay(config, config.batch_size, nimg)
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, net_params, 1 - beta)
            loss_mean = step_loss if loss_mean is None else 0.99 * loss_mean + 0.01 * step_loss
        nimg += config.batch_size
        step += 1
        bar.update(config.batch_size / 1000)
        for key, value in (("loss", step_loss), ("fm_loss", step_fm), ("repa_loss", step_repa), ("grad_norm", grad_norm)):
            window[key] += value
        window["steps"] += 1
        window["spikes"] += spike

        # ------------------------------------------------------------ logging, states, snapshots
        done = nimg >= config.total_kimg * 1000
        if step % config.log_every == 0 or done:
            elapsed = time.time() - window["start"]
            record = {"kimg": nimg / 1000, "step": step, "lr": lr, "grad_clip": clip,
                      **{k: window[k] / window["steps"] for k in ("loss", "fm_loss", "repa_loss", "grad_norm")},
                      "spikes": window["spikes"], "images_per_second": window["steps"] * config.batch_size / elapsed,
                      "peak_memory_mib": peak_memory_mib(device)}
            log.stats(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window.update(loss=0.0, fm_loss=0.0, repa_loss=0.0, grad_norm=0.0, steps=0, spikes=0, start=time.time())
        if nimg >= next_snapshot or done:
            if is_main:
                kimg_name = config.total_kimg if done else next_snapshot // 1000
                save_network(snapshot_path(run_dir, kimg_name), net.config, net=net.state_dict(), ema=ema.state_dict(),
                             metadata={"kimg": kimg_name, "nimg": nimg, "run": config.run_name(), "resolution": config.resolution,
                                       "prediction": config.prediction, "latent": latent_record, "text": config.text,
                                       "train_config": dataclasses.asdict(config)})
            next_snapshot += config.snapshot_kimg * 1000
        if nimg >= next_state or done:
            if is_main:
                state = {"net": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                         "projector": projector.state_dict() if projector is not None else None,
                         "nimg": nimg, "step": step, "loader": batches.state_dict(), "loss_mean": loss_mean,
                         "torch_rng": torch.get_rng_state()}
                kimg_name = config.total_kimg if done else next_state // 1000
                atomic_torch_save(state, run_dir / f"training-state-{kimg_name:07d}.pt")
            next_state += config.state_kimg * 1000
        if world_size > 1:
            dist.barrier()
    bar.close()
    log(f"finished {config.total_kimg} kimg at step {step}: {final_snapshot.name}")
    return final_snapshot


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


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA max allocated, else the peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _progress(config: TrainConfig, nimg: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=config.total_kimg, initial=nimg / 1000, unit="kimg", disable=not enabled,
                bar_format="{l_bar}{bar}| {n:.2f}/{total} kimg [{elapsed}<{remaining}{postfix}]")
