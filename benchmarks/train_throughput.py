"""Training throughput: this project's trainer against the upstream training step, same config, one run.

Ours is the full `pixeldit.train.train` loop (data loading, REPA, EMA, logging, states) on digits32.
The reference is upstream NVlabs/PixelDiT's own step (`PixDiT` + `REPATrainer` from c2i/src/diffusion.py,
AdamW, gradient clipping and the `SimpleEMA` foreach update) driven by a bare loop over the same batches:
Lightning's overhead is left out, which favours the reference. Both use the same tiny random ViT/14 as the
REPA encoder (DINOv2's weights are not available offline). Upstream source is read from --upstream, a
checkout of NVlabs/PixelDiT kept outside this repository; its Lightning-only `src/utils.py` is replaced by a
two-line stub providing `no_grad`.

    python benchmarks/train_throughput.py --upstream /path/to/PixelDiT --model PixelDiT-S/4 --batch 64 --kimg 2
Writes JSON with images/s and peak memory (process peak RSS on CPU) of both and
ratio = ours / reference (must be >= 1.0; the script exits 1 otherwise).
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def reference_throughput(upstream: Path, config, dataset, batch: int, steps: int, align_layer: int) -> dict:
    import torch

    from pixeldit.data import ImageBatches, to_model_range
    from pixeldit.repa import tiny_random_encoder

    work = Path(tempfile.mkdtemp(prefix="pixeldit-upstream-"))
    shutil.copytree(upstream / "pixdit_core", work / "pixdit_core")
    (work / "src").mkdir()
    shutil.copy(upstream / "c2i" / "src" / "diffusion.py", work / "src" / "diffusion.py")
    (work / "src" / "__init__.py").write_text("")
    (work / "src" / "utils.py").write_text("def no_grad(net):\n    for p in net.parameters():\n        p.requires_grad_(False)\n    net.eval()\n    return net\n")
    sys.path.insert(0, str(work))
    from pixdit_core.pixeldit_c2i import PixDiT
    from src.diffusion import LinearScheduler, REPATrainer

    torch.manual_seed(0)
    net = PixDiT(in_channels=3, num_groups=config.num_heads, hidden_size=config.hidden_size,
                 pixel_hidden_size=config.pixel_hidden_size, patch_depth=config.patch_depth,
                 pixel_depth=config.pixel_depth, patch_size=config.patch_size, num_classes=config.num_classes)
    ema = copy.deepcopy(net).requires_grad_(False)
    encoder = tiny_random_encoder()
    trainer = REPATrainer(scheduler=LinearScheduler(), lognorm_t=True, timeshift=1.0, encoder=encoder,
                          align_layer=align_layer, proj_denoiser_dim=config.hidden_size,
                          proj_hidden_dim=config.hidden_size, proj_encoder_dim=encoder.embed_dim,
                          feat_loss_weight=0.5, null_condition_p=0.1)
    params = list(net.parameters()) + list(trainer.proj.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ema_params, net_params = list(ema.parameters()), list(net.parameters())
    batches = ImageBatches(dataset, batch, seed=0)
    start = None
    for step in range(steps + 2):
        if step == 2:   # two warm-up steps, as ours skips its first log window
            start = time.perf_counter()
        images, labels = next(batches)
        x = to_model_range(images)
        losses = trainer(net, ema, None, x, labels, torch.full_like(labels, config.num_classes),
                         metadata={"raw_image": (x + 1) / 2})
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_mul_(ema_params, 0.9999)
            torch._foreach_add_(ema_params, net_params, alpha=1 - 0.9999)
    elapsed = time.perf_counter() - start
    return {"images_per_second": steps * batch / elapsed, "steps": steps,
            "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _reference_in_process(upstream, config, dataset_path, batch, steps, align_layer):
    from pixeldit.data import open_dataset

    return reference_throughput(upstream, config, open_dataset(dataset_path, split="train"), batch, steps, align_layer)


def our_throughput(config_name: str, dataset_path: Path, batch: int, kimg: int, align_layer: int) -> dict:
    from pixeldit.train import TrainConfig, train

    run_dir = Path(tempfile.mkdtemp(prefix="pixeldit-ours-"))
    config = TrainConfig.from_preset("digits32-s4", model=config_name, dataset=str(dataset_path), batch_size=batch,
                                     total_kimg=kimg, log_every=4, snapshot_kimg=kimg, state_kimg=kimg,
                                     ema_decay=0.9999, ema_halflife_kimg=None, ema_rampup=None,
                                     repa={"encoder": "tiny-random", "align_layer": align_layer, "weight": 0.5})
    train(config, run_dir, progress=False)
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    timed = records[1:]   # the first window includes start-up
    return {"images_per_second": sum(r["images_per_second"] for r in timed) / len(timed),
            "steps": records[-1]["step"], "peak_memory_mib": records[-1]["peak_memory_mib"]}


def main() -> None:
    import torch

    import pixeldit  # noqa: F401
    from pixeldit.data import prepare_digits32
    from pixeldit.models import model_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, required=True, help="NVlabs/PixelDiT checkout (outside the repo)")
    parser.add_argument("--model", default="PixelDiT-S/4")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--kimg", type=int, default=2)
    parser.add_argument("--align-layer", type=int, default=4)
    parser.add_argument("--dataset", type=Path, default=Path("results/data/digits32"))
    parser.add_argument("--rounds", type=int, default=2, help="alternating measurements of each; the best counts")
    parser.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()
    if not (args.dataset / "dataset.json").exists():
        prepare_digits32(args.dataset)
    config = model_config(args.model, num_classes=10)
    # Each measurement runs in its own process (clean peak memory); rounds alternate to spread machine noise.
    context = multiprocessing.get_context("spawn")
    ours, reference = [], []
    for _ in range(args.rounds):
        with context.Pool(1) as pool:
            ours.append(pool.apply(our_throughput, (args.model, args.dataset, args.batch, args.kimg, args.align_layer)))
        with context.Pool(1) as pool:
            reference.append(pool.apply(_reference_in_process, (args.upstream, config, args.dataset, args.batch,
                                                                ours[-1]["steps"] - 4, args.align_layer)))
    ours = max(ours, key=lambda r: r["images_per_second"])
    reference = max(reference, key=lambda r: r["images_per_second"])
    report = {"benchmark": "train_throughput", "model": args.model, "resolution": 32, "batch": args.batch,
              "device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "ours": ours, "reference": reference,
              "ratio_ours_over_reference": ours["images_per_second"] / reference["images_per_second"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if report["ratio_ours_over_reference"] < 1.0:
        sys.exit(1)


if __name__ == "__main__":
    main()
