"""Builders the tests share (fixture files, tiny models, CLI apps), so no test module imports another."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import typer
import yaml
from PIL import Image

from evaluators.dpg.layout import write_grid
from evaluators.dpg.questions import COLUMNS
from evaluators.imagenet.dinov2 import DinoV2ViT
from evaluators.imagenet.extractors import EXTRACTORS, dinov2_extractor
from pixeldit.cli.eval_dpg import dpg_app, eval_dpg
from pixeldit.data.digits import digits32_images
from pixeldit.infra import weights as weights_registry
from pixeldit.infra.datasets import DatasetWriter
from pixeldit.models.autoencoder import DIGITS_AE_CONFIG, SD_VAE_SCALE, LatentAutoencoder, build_vae

# ------------------------------------------------------------------------------------------------
# DPG-Bench: the small question CSV, recorded answers and grids whose tile colours name (item, tile)

DPG_FIXTURES = Path(__file__).parent / "fixtures" / "dpg"
CSV = DPG_FIXTURES / "questions_small.csv"
RECORDED = json.loads((DPG_FIXTURES / "answers.json").read_text())["answers"]
TILE = 8


def colour(index, tile):
    return (10 + index, 20 + tile, 200)


def write_images(folder, items=tuple(sorted(RECORDED))):
    """One grid per item whose tiles are solid colours naming (item, tile), as in the reference run."""
    for index, item in enumerate(sorted(RECORDED)):
        if item in items:
            write_grid(folder, item, [np.full((TILE, TILE, 3), colour(index, tile), np.uint8) for tile in range(4)])
    return folder


def cli():
    app, eval_app = typer.Typer(), typer.Typer()
    eval_app.command("dpg")(eval_dpg)
    app.add_typer(eval_app, name="eval")
    app.add_typer(dpg_app, name="dpg")
    return app


def write_csv(path, rows, header=COLUMNS):
    """rows: (item_id, proposition_id, dependency, tuple, question)."""
    lines = [",".join(header)]
    for item_id, proposition_id, dependency, tuple_text, question in rows:
        lines.append(f'{item_id},prompt,kw,{proposition_id},"{dependency}",b,d,"{tuple_text}",{question}')
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# Latent baselines: a tiny real-digits dataset and a random tiny autoencoder

TINY_AE = {**DIGITS_AE_CONFIG, "block_out_channels": (8, 16, 16), "norm_num_groups": 8}


def write_tiny_digits(path, train=32, reference=16):
    """A small real-digits dataset (train / reference splits) in the project's format."""
    images, labels = digits32_images()
    with DatasetWriter(path, 32) as writer:
        for index in range(train + reference):
            writer.add(images[index], labels[index])
        fields = {"name": "digits-tiny", "num_classes": 10, "class_names": [str(d) for d in range(10)],
                  "source": {"kind": "test"}, "preprocessing": "digits32", "prepare_command": "test"}
        return writer.finish(fields, splits={"train": (0, train), "reference": (train, train + reference)})


def random_autoencoder(shift=0.0, scale=SD_VAE_SCALE) -> LatentAutoencoder:
    torch.manual_seed(1)
    vae = build_vae(TINY_AE)
    channels = TINY_AE["latent_channels"]
    return LatentAutoencoder(vae, torch.full((channels,), shift), torch.full((channels,), scale), name="random")


# ------------------------------------------------------------------------------------------------
# The Snakemake workflow: this interpreter's snakemake in the repository, and the tiny benchmark config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# Rules call `pixeldit-bench`: put this interpreter's scripts folder first, as the bootstrap's venv does.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1",
       "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}


def snakemake(*args, cwd=REPO, timeout=300):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


def write_tiny_benchmark(tmp_path, kimg=12, runtime=1):
    """A config for the real DAG on 40 random 16x16 images: minutes on 2 cores, every stage exercised.

    kimg: the run's budget. The default 12 leaves ~20 s of training after the first state, so the kill test's
    Ctrl-C lands mid-training (at 2 kimg the remaining 1 kimg took ~2 s and once finished before it arrived).
    runtime: minutes each train/sample/eval job may take, which only a scheduler enforces.
    """
    source = tmp_path / "source"
    rng = np.random.default_rng(0)
    for index in range(40):
        folder = source / f"class{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    results = tmp_path / "results"
    config = {
        "name": "tiny", "results": str(results),
        "dataset": {"name": "tiny16", "source": str(source), "resolution": 16},
        "reference": {"file": str(results / "refs" / "tiny16.npz"), "split": "train"},
        "runs": {"t4": {"preset": "digits32-t4-smoke", "kimg": kimg, "eval_kimg": [1, 2], "group": "ablation",
                        "variant": "pixeldit", "set": {"resolution": 16, "state_kimg": 1, "snapshot_kimg": 1}}},
        "sampling": {"n": 20, "shard_size": 10, "seed": 0, "batch_size": 10,
                     "samplers": ["euler-steps4-cfg1.0-int0.0-1.0-shift1.0"]},
        "evaluators": ["imagenet"],
        "resources": {key: 1 for key in ("train_threads", "train_mem_mb", "sample_threads", "sample_mem_mb",
                                         "eval_threads", "eval_mem_mb")}
                     | {f"{stage}_runtime": runtime for stage in ("train", "sample", "eval")}
                     | {"train_gpus": 0, "sample_gpus": 0, "eval_gpus": 0},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, results


# ------------------------------------------------------------------------------------------------
# A tiny DINOv2 of the extractor's own code: a small config (its 3×3 position grid resized to the input's 4×4,
# as ViT-L/14's 37×37 is to 16×16), seeded weights in the official key layout, under a test registry name

TINY_DINOV2 = dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=4, patch_size=14, checkpoint_grid=3)
TINY_DINOV2_SIZE = 56                                      # a 4×4 patch grid
TINY_DINOV2_WEIGHTS = weights_registry.WeightFile(
    name="dinov2-tiny-test", url="file:///nonexistent/dinov2-tiny-test.pth", filename="dinov2-tiny-test.pth",
    licence="test", description="tiny test DINOv2")


def tiny_dinov2_registrations() -> dict:
    """{registry: (key, entry)} that make `dinov2` the tiny network: for monkeypatch.setitem, or to apply."""
    return {"weights": (weights_registry.WEIGHTS, TINY_DINOV2_WEIGHTS.name, TINY_DINOV2_WEIGHTS),
            "extractor": (EXTRACTORS, "dinov2",
                          dinov2_extractor("dinov2", TINY_DINOV2_WEIGHTS.name, TINY_DINOV2, TINY_DINOV2_SIZE))}


def write_tiny_dinov2_weights() -> Path:
    """Seeded weights of the tiny DINOv2 at its registry path (under $PIXELDIT_WEIGHTS)."""
    generator = torch.Generator().manual_seed(7)
    state = {name: 0.2 * torch.randn(tensor.shape, generator=generator) + (1 if name.endswith(".gamma") else 0)
             for name, tensor in DinoV2ViT(**TINY_DINOV2).state_dict().items()}
    path = weights_registry.path_of(TINY_DINOV2_WEIGHTS.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
