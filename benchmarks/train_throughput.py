"""Training throughput: this project's trainer against the upstream training step, same config, one run.

Ours is the full `pixeldit.train.train` loop (data loading, REPA, EMA, logging, states) on digits32 (at
--resolution other than 32: the training digits upscaled, nearest neighbour). The reference is upstream
NVlabs/PixelDiT's own step (`PixDiT` + `REPATrainer` from c2i/src/diffusion.py, AdamW, gradient clipping and
the `SimpleEMA` foreach update) driven by a bare loop over the same batches: Lightning's overhead is left
out, which favours the reference. On a GPU, `--precision bf16` is upstream's `bf16-mixed` (autocast) for
both, and `--compile` compiles both models as upstream's `configure_model` does. Both use the same tiny
random ViT/14 as the REPA encoder (DINOv2's weights are not available offline). Upstream source is read from
--upstream, a checkout of NVlabs/PixelDiT kept outside this repository; its Lightning-only `src/utils.py` is
replaced by a two-line stub providing `no_grad`.

    python benchmarks/train_throughput.py --upstream /path/to/PixelDiT --model PixelDiT-S/4 --batch 32 --kimg 1 --align-layer 2
    python benchmarks/train_throughput.py --upstream /path/to/PixelDiT --model PixelDiT-XL/16 --resolution 256 \\
        --batch 64 --kimg 2 --align-layer 8 --precision bf16 --rounds 1          # on a GPU: adds MFU

Writes JSON with images/s and peak memory (CUDA: max allocated; CPU: process peak RSS) of both,
ratio = ours / reference (must be >= 1.0; the script exits 1 otherwise) and, on a GPU, model FLOP
utilisation: 3 x forward FLOPs (2 per multiply-add, REPA encoder and projector not counted) x images/s
over the GPU's dense bf16 peak.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), TFLOP/s.
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.05, "B200": 2250.0}


def _device():
    from pixeldit.infra.devices import resolve_device

    return resolve_device()


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_throughput(upstream: Path, config, dataset, batch: int, steps: int, align_layer: int,
                         precision: str, compile_model: bool) -> dict:
    import torch

    from pixeldit.data import ImageBatches, to_model_range
    from pixeldit.infra.devices import peak_memory_mib
    from pixeldit.repa import tiny_random_encoder

    work = Path(tempfile.mkdtemp(prefix="pixeldit-upstream-"))
    shutil.copytree(upstream / "pixdit_core", work / "pixdit_core")
    (work / "src").mkdir()
    shutil.copy(upstream / "c2i" / "src" / "diffusion.py", work / "src" / "diffusion.py")
    (work / "src" / "__init__.py").write_text("")
    (work / "src" / "utils.py").write_text("def no_grad(net):\n    for p in net.parameters():\n        p.requires_grad_(False)\n"
                                           "    net.eval()\n    return net\n")
    sys.path.insert(0, str(work))
    from pixdit_core.pixeldit_c2i import PixDiT
    from src.diffusion import LinearScheduler, REPATrainer

    device = _device()
    torch.manual_seed(0)
    net = PixDiT(in_channels=3, num_groups=config.num_heads, hidden_size=config.hidden_size,
                 pixel_hidden_size=config.pixel_hidden_size, patch_depth=config.patch_depth,
                 pixel_depth=config.pixel_depth, patch_size=config.patch_size, num_classes=config.num_classes).to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    if compile_model:
        net.compile()
    encoder = tiny_random_encoder().to(device)
    trainer = REPATrainer(scheduler=LinearScheduler(), lognorm_t=True, timeshift=1.0, encoder=encoder,
                          align_layer=align_layer, proj_denoiser_dim=config.hidden_size,
                          proj_hidden_dim=config.hidden_size, proj_encoder_dim=encoder.embed_dim,
                          feat_loss_weight=0.5, null_condition_p=0.1).to(device)
    params = list(net.parameters()) + list(trainer.proj.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ema_params, net_params = list(ema.parameters()), list(net.parameters())
    batches = ImageBatches(dataset, batch, seed=0)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    start = None
    for step in range(steps + 2):
        if step == 2:   # two warm-up steps, as ours skips its first log window
            _synchronize(device)
            start = time.perf_counter()
        images, labels = next(batches)
        x = to_model_range(images.to(device))
        labels = labels.to(device)
        with torch.autocast(**autocast):
            losses = trainer(net, ema, None, x, labels, torch.full_like(labels, config.num_classes),
                             metadata={"raw_image": (x + 1) / 2})
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_mul_(ema_params, 0.9999)
            torch._foreach_add_(ema_params, net_params, alpha=1 - 0.9999)
    _synchronize(device)
    elapsed = time.perf_counter() - start
    return {"images_per_second": steps * batch / elapsed, "steps": steps, "peak_memory_mib": peak_memory_mib(device)}


def _reference_in_process(upstream, config, dataset_path, batch, steps, align_layer, precision, compile_model):
    from pixeldit.data import open_dataset

    return reference_throughput(upstream, config, open_dataset(dataset_path, split="train"), batch, steps,
                                align_layer, precision, compile_model)


def our_throughput(config_name: str, dataset_path: Path, resolution: int, batch: int, kimg: int, align_layer: int,
                   precision: str, compile_model: bool) -> dict:
    from pixeldit.train import TrainConfig, train

    run_dir = Path(tempfile.mkdtemp(prefix="pixeldit-ours-"))
    # v-prediction and a per-step EMA decay: the upstream step's objective and EMA.
    config = TrainConfig.from_preset("digits32-s4", model=config_name, dataset=str(dataset_path), resolution=resolution,
                                     batch_size=batch, total_kimg=kimg, log_every=4, snapshot_kimg=kimg, state_kimg=kimg,
                                     prediction="v", ema_decay=0.9999, ema_halflife_kimg=None, ema_rampup=None,
                                     precision=precision, compile=compile_model,
                                     repa={"encoder": "tiny-random", "align_layer": align_layer, "weight": 0.5})
    try:
        train(config, run_dir, progress=False)
        records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)   # an XL state is ~11 GB
    timed = records[1:]   # the first window includes start-up (and compilation)
    return {"images_per_second": sum(r["images_per_second"] for r in timed) / len(timed),
            "steps": records[-1]["step"], "peak_memory_mib": records[-1]["peak_memory_mib"]}


def benchmark_dataset(resolution: int, root: Path) -> Path:
    """digits32 itself at 32 px; at another resolution its training digits upscaled by pixel repetition."""
    from pixeldit.data import prepare_digits32
    from pixeldit.data.digits import digits32_images, digits32_split
    from pixeldit.infra.datasets import DatasetWriter

    digits32 = root / "digits32"
    if resolution == 32:
        if not (digits32 / "dataset.json").exists():
            prepare_digits32(digits32)
        return digits32
    if resolution % 32:
        raise SystemExit(f"--resolution must be a multiple of 32, got {resolution}")
    out = root / f"digits32-upscaled-{resolution}"
    if (out / "dataset.json").exists():
        return out
    images, labels = digits32_images()
    train, _ = digits32_split(labels)
    factor = resolution // 32
    with DatasetWriter(out, resolution, overwrite=True) as writer:
        for index in train:
            writer.add(images[index].repeat(factor, axis=0).repeat(factor, axis=1), labels[index])
        return writer.finish({"name": f"digits32-upscaled-{resolution}", "num_classes": 10,
                              "class_names": [str(d) for d in range(10)],
                              "source": {"kind": "digits32 train split (benchmark only)"},
                              "preprocessing": f"digits32, each pixel repeated {factor}x{factor}",
                              "prepare_command": "python benchmarks/train_throughput.py --resolution "
                                                 f"{resolution} (benchmark_dataset)"})


def model_flop_utilisation(result: dict, forward_flops: float, device_name: str) -> dict:
    achieved = 3 * forward_flops * result["images_per_second"] / 1e12
    peak = next((value for key, value in BF16_PEAK_TFLOPS.items() if key in device_name), None)
    return {"model_tflops_per_second": achieved, "bf16_peak_tflops": peak, "mfu": achieved / peak if peak else None}


def main() -> None:
    import torch

    import pixeldit  # noqa: F401
    from pixeldit.models import model_config
    from pixeldit.models.flops import model_forward_flops

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, required=True, help="NVlabs/PixelDiT checkout (outside the repo)")
    parser.add_argument("--model", default="PixelDiT-S/4")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--kimg", type=int, default=2)
    parser.add_argument("--align-layer", type=int, default=4)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast needs a GPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (upstream's default)")
    parser.add_argument("--data-root", type=Path, default=Path("results/data"))
    parser.add_argument("--rounds", type=int, default=2, help="alternating measurements of each; the best counts")
    parser.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()
    device = _device()
    if args.precision == "bf16" and device.type != "cuda":
        raise SystemExit("--precision bf16 needs a CUDA GPU (the trainer only autocasts on CUDA)")
    dataset = benchmark_dataset(args.resolution, args.data_root)
    config = model_config(args.model, num_classes=10)
    # Each measurement runs in its own process (clean peak memory); rounds alternate to spread machine noise.
    context = multiprocessing.get_context("spawn")
    ours, reference = [], []
    for _ in range(args.rounds):
        with context.Pool(1) as pool:
            ours.append(pool.apply(our_throughput, (args.model, dataset, args.resolution, args.batch, args.kimg,
                                                    args.align_layer, args.precision, args.compile)))
        print("ours:", json.dumps(ours[-1]), flush=True)   # kept in the log even if the reference runs out of time
        with context.Pool(1) as pool:
            reference.append(pool.apply(_reference_in_process, (args.upstream, config, dataset, args.batch,
                                                                ours[-1]["steps"] - 4, args.align_layer,
                                                                args.precision, args.compile)))
    ours = max(ours, key=lambda r: r["images_per_second"])
    reference = max(reference, key=lambda r: r["images_per_second"])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    if device.type == "cuda":
        forward_flops = model_forward_flops(config, args.resolution)
        ours.update(model_flop_utilisation(ours, forward_flops, device_name))
        reference.update(model_flop_utilisation(reference, forward_flops, device_name))
    report = {"benchmark": "train_throughput", "model": args.model, "resolution": args.resolution, "batch": args.batch,
              "precision": args.precision, "compile": args.compile, "device": device_name,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "command": " ".join(sys.argv),
              "ours": ours, "reference": reference,
              "ratio_ours_over_reference": ours["images_per_second"] / reference["images_per_second"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if report["ratio_ours_over_reference"] < 1.0:
        sys.exit(1)


if __name__ == "__main__":
    main()
