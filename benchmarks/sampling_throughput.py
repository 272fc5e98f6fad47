"""Sampling throughput: this project's sampler + PixelDiT vs the official reference sampler + official PixDiT.

Three runs share the weights (the official model's state_dict, mapped with `from_official_state_dict` for
ours), the AB2 settings, noise and labels, on one machine in one process, each timed per batch end to end
(noise, the sampler, uint8 quantisation to the host): the reference sampler on the official PixDiT; our
sampler on that same PixDiT module (`ratio`: the samplers alone); our sampler on our PixelDiT
(`end_to_end_ratio`, which also compares the two model implementations). The reference code is read out
of a mirror of NVlabs/PixelDiT at run time into a scratch folder outside the repository (never committed);
it runs under its own bf16 autocast on CUDA, so ours gets `autocast_bf16` there too (fp32 on CPU for both).

Writes JSON: images/s for each, the ratios to the reference (the script exits 1 when the sampler `ratio`
is below 1.0), and how far our images are from the reference's (uint8 levels).

    python benchmarks/sampling_throughput.py --out results/benchmarks/sampling_throughput.json
    python benchmarks/sampling_throughput.py --preset small --steps 20 --batch 8 --repeats 3
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from pixeldit.infra.files import write_json_atomic
from pixeldit.infra.images import quantize
from pixeldit.infra.results import environment
from pixeldit.models.official import from_official_state_dict
from pixeldit.sample import generate, sample_noise
from pixeldit.samplers import Sampler

REFERENCE_FILES = ("c2i/src/diffusion.py", "pixdit_core/__init__.py", "pixdit_core/modules.py",
                   "pixdit_core/pixeldit_c2i.py")
# Official PixDiT constructor arguments; "tiny" runs in seconds on a laptop CPU.
MODEL_PRESETS = {
    "tiny": dict(in_channels=3, num_groups=4, hidden_size=64, pixel_hidden_size=8, patch_depth=2, pixel_depth=1,
                 patch_size=4, num_classes=10),
    "small": dict(in_channels=3, num_groups=6, hidden_size=384, pixel_hidden_size=16, patch_depth=12, pixel_depth=2,
                  patch_size=16, num_classes=1000),
}


def load_reference(mirror: Path, scratch: Path):
    """(FlowDPMSolverSampler module, PixDiT class) from the mirror, copied into `scratch` and imported there."""
    commit = subprocess.run(["git", "-C", str(mirror), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    for name in REFERENCE_FILES:
        target = scratch / name.replace("c2i/src/", "reference_c2i/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(subprocess.run(["git", "-C", str(mirror), "show", f"HEAD:{name}"], capture_output=True,
                                         text=True, check=True).stdout)
    # diffusion.py's trainer needs torchvision and timm and its package's utils; the samplers need none of them.
    stubs = {"reference_c2i": {"__path__": [str(scratch / "reference_c2i")]},
             "reference_c2i.utils": {"no_grad": torch.no_grad}}
    for optional, attributes in (("torchvision.transforms", {"Normalize": object}),
                                 ("timm.data.constants", {"IMAGENET_DEFAULT_MEAN": 0, "IMAGENET_DEFAULT_STD": 1})):
        try:
            importlib.import_module(optional)
        except ImportError:
            stubs[optional] = attributes
    for name, attributes in stubs.items():
        for parent in [name.rsplit(".", k)[0] for k in range(name.count("."), -1, -1)]:
            sys.modules.setdefault(parent, types.ModuleType(parent))
        sys.modules[name].__dict__.update(attributes)
    sys.path.insert(0, str(scratch))
    from pixdit_core.pixeldit_c2i import PixDiT
    from reference_c2i import diffusion

    return diffusion, PixDiT, commit


def best_rates(runs: dict, images: int, repeats: int, clock) -> dict[str, float]:
    """Images per second of each run's fastest repeat; repeats interleave the runs so that load drifting on
    a shared machine hits them alike. One untimed warm-up each."""
    for run in runs.values():
        run()
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = clock()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[name] = min(best[name], clock() - start)
    return {name: images / seconds for name, seconds in best.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror/gcy-hub+PixelDiT/repo"),
                        help="git dir of an NVlabs/PixelDiT clone or verbatim fork")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/pixeldit_sampling_benchmark"),
                        help="where the reference sources are copied (outside the repository)")
    parser.add_argument("--preset", choices=sorted(MODEL_PRESETS), default="tiny")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/sampling_throughput.json"))
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda"
    diffusion, PixDiT, commit = load_reference(args.mirror, args.scratch)
    config = MODEL_PRESETS[args.preset]
    torch.manual_seed(0)
    official = PixDiT(**config).eval()
    with torch.no_grad():  # the released init zeroes the AdaLN and output layers; give every path signal
        for name, parameter in official.named_parameters():
            if not parameter.any():
                parameter.normal_(std=0.02)
    ours = from_official_state_dict(official.state_dict()).eval().to(device)
    official.to(device)

    # The paper's 256 setting (AB2, w 2.75, interval [0.1, 0.9], shift 1) with fewer steps.
    sampler = Sampler("ab2", args.steps, cfg_scale=2.75, cfg_min=0.1, cfg_max=0.9, shift=1.0)
    reference_sampler = diffusion.FlowDPMSolverSampler(
        scheduler=diffusion.LinearScheduler(), guidance_fn=diffusion.simple_guidance_fn, num_steps=args.steps,
        guidance=2.75, timeshift=1.0, guidance_interval_min=0.1, guidance_interval_max=0.9)
    num_classes = config["num_classes"]
    indices = range(args.batch)
    labels = torch.arange(args.batch, device=device) % num_classes                        # (B,)

    def run_reference() -> np.ndarray:
        noise = sample_noise(0, indices, (3, args.resolution, args.resolution)).to(device)  # (B, 3, H, W)
        with torch.no_grad():
            x = reference_sampler(official, noise, labels, torch.full_like(labels, num_classes))
        return quantize(x, "round")

    def run_ours(model) -> np.ndarray:
        with torch.no_grad():
            return generate(model, indices, sampler, 0, num_classes, args.resolution, args.batch, device, bf16)[0]

    runs = {"reference": run_reference,                                   # reference sampler, official PixDiT
            "pixeldit_bench_sampler": lambda: run_ours(official),         # our sampler, the same official PixDiT
            "pixeldit_bench_end_to_end": lambda: run_ours(ours)}          # our sampler, our PixelDiT
    images = {name: run() for name, run in runs.items()}
    level_gap = {name: int(np.abs(images[name].astype(int) - images["reference"].astype(int)).max())
                 for name in runs if name != "reference"}
    # On a shared CPU, this process's CPU time is far steadier than wall time; on a GPU, wall time.
    clock = time.perf_counter if bf16 else time.process_time
    rates = best_rates(runs, args.batch, args.repeats, clock)
    ratio = rates["pixeldit_bench_sampler"] / rates["reference"]
    record = {
        "benchmark": "sampling_throughput", "device": torch.cuda.get_device_name() if bf16 else "cpu",
        "threads": torch.get_num_threads(), "clock": clock.__name__, "precision": "bf16-autocast" if bf16 else "fp32",
        "model": {"preset": args.preset, "official_config": config}, "resolution": args.resolution,
        "batch": args.batch, "repeats": args.repeats, "sampler": sampler.key,
        "forward_passes_per_batch": {"pixeldit_bench": sum(2 if sampler.guidance_active(t) else 1
                                                           for t in sampler.timesteps()[:-1]),
                                     "reference": 2 * args.steps},
        "images_per_s": rates,
        "ratio": ratio,  # the samplers compared on one network module
        "end_to_end_ratio": rates["pixeldit_bench_end_to_end"] / rates["reference"],
        "max_uint8_difference_to_reference": level_gap,
        "reference": {"source": str(args.mirror), "commit": commit, "files": list(REFERENCE_FILES)},
        "env": environment(),
    }
    write_json_atomic(args.out, record)
    print(", ".join(f"{name} {rate:.2f} img/s" for name, rate in rates.items())
          + f"; sampler ratio {ratio:.3f}, end-to-end ratio {record['end_to_end_ratio']:.3f}; "
          f"max uint8 difference to the reference {level_gap} -> {args.out}")
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
