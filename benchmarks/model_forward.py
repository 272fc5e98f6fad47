"""Forward+backward time and peak memory of each registry entry, optionally against the upstream model.

Each measurement runs in a fresh subprocess so peak memory (CUDA: max_memory_allocated; CPU: peak RSS
growth) belongs to that model alone. With --upstream PATH (a folder holding NVlabs/PixelDiT's
`pixdit_core/`, kept outside this repository) the same config is timed in the upstream implementation in
the same run and the JSON carries the speed ratio (upstream time / ours: > 1 means ours is faster).

    python benchmarks/model_forward.py --res 32 --batch 8 --models PixelDiT-S/4 PixelDiT-T/4
    python benchmarks/model_forward.py --res 256 --batch 32 --models PixelDiT-XL/16 --dtype bf16   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path


def _measure(queue, impl: str, name: str, res: int, batch: int, dtype: str, device: str, repeats: int, upstream: str | None):
    import torch

    import pixeldit  # noqa: F401
    from pixeldit.models import build_network

    torch.manual_seed(0)
    ours = build_network(name)
    cfg = ours.config
    if impl == "upstream":
        sys.path.insert(0, upstream)
        from pixdit_core.pixeldit_c2i import PixDiT  # imported from outside the repository
        model = PixDiT(in_channels=3, num_groups=cfg.num_heads, hidden_size=cfg.hidden_size,
                       pixel_hidden_size=cfg.pixel_hidden_size, patch_depth=cfg.patch_depth, pixel_depth=cfg.pixel_depth,
                       patch_size=cfg.patch_size, num_classes=cfg.num_classes)
    else:
        model = ours
    del ours
    model = model.to(device).train()
    x = torch.randn(batch, 3, res, res, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(repeats + 1):  # the first pass warms up allocators and kernels
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(x, t, y).float().pow(2).mean()
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # KiB -> MiB
    queue.put({"seconds_per_step": sorted(times)[len(times) // 2], "images_per_second": batch / sorted(times)[len(times) // 2],
               "peak_memory_mib": round(peak, 1), "params": sum(p.numel() for p in model.parameters())})


def measure(impl, name, args, device):
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(queue, impl, name, args.res, args.batch, args.dtype, device,
                                                     args.repeats, args.upstream))
    process.start()
    process.join()
    if process.exitcode != 0:
        return {"error": f"subprocess exited with {process.exitcode} (out of memory?)"}
    return queue.get()


def main() -> None:
    import torch

    import pixeldit  # noqa: F401
    from pixeldit.models import MODELS, models_in
    from pixeldit.models.flops import count_flops

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(models_in("pixeldit")))
    parser.add_argument("--res", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upstream", help="folder containing upstream pixdit_core/ (outside the repo)")
    parser.add_argument("--out", default="benchmarks/results/model_forward.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    rows = []
    for name in args.models:
        if args.res % MODELS[name].patch_size:
            continue
        row = {"model": name, "gflops_forward": round(count_flops(name, args.res) / 1e9, 3),
               "ours": measure("ours", name, args, device)}
        if args.upstream:
            row["upstream"] = measure("upstream", name, args, device)
            if "error" not in row["upstream"] and "error" not in row["ours"]:
                row["speed_ratio_upstream_over_ours"] = round(row["upstream"]["seconds_per_step"] / row["ours"]["seconds_per_step"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"benchmark": "model_forward", "resolution": args.res, "batch": args.batch, "dtype": args.dtype,
              "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
