"""Throughput of the ImageNet evaluator vs plain torch-fidelity on the same images; writes JSON.

    python benchmarks/eval_throughput.py --n 2000 --out results/bench/eval_throughput.json

Both sides score N samples against N reference images (2N images through Inception) with FID, KID and
precision/recall on `inception-v3-compat` with the same weights file:

* evaluator: `evaluate_imagenet(..., metrics=fid,kid,precision,recall, bootstrap=0)` with an empty cache (its
  one pass also yields the sFID features), then the same call again (cached: features and metric values), then
  once more with only the metric memo removed (features cached, metrics recomputed). The FID bootstrap is off:
  torch-fidelity has none, and at N = 1,000 its 1,000 resamples cost more than both Inception passes;
* torch-fidelity: `torch_fidelity.calculate_metrics(fid=True, kid=True, prc=True,
  feature_extractor="inception-v3-compat")` with its defaults (kid_subset_size lowered only when N < 1000).

images/s = 2N / wall seconds of the whole call (features and metrics). The images are the embedded
digits (32×32), cycled with random rolls up to N; content does not change the speed.

It also times the three Fréchet routes for one set of N 2048-d sample features against one (mu, sigma) (so
rank-deficient below 2048, as small sample sets are): ADM's `scipy.linalg.sqrtm`, the symmetric `eigh` route
and the `gram` route (n×n, the default below 2048 features), with their ratios and relative differences.

`--extractors inception,dinov2,clip` times each registered extractor's network pass alone (`--extractor-images`
digits, batch 16 on CPU): Inception with its real offline weights; DINOv2 ViT-L/14 and CLIP ViT-L/14 @ 336
with seeded random weights of their real configs when their files are absent (speed does not depend on the
values; the JSON says which). `--memory 2000,10000` measures the streaming path's memory: for each N, a fresh
process runs the evaluator's feature pass (`features.extract`, cache on) over N images through a stand-in
2048-d network (a fixed random projection of the pixels: the network is not what is measured), the FD from
the streamed statistics (`FeatureSet.moments`) and FID(N); beside it, a process that does what the evaluator
did before (np.cov of the stacked features, FID(N) by weighted resampling of all rows). Peak anonymous memory
(RssAnon, sampled every 5 ms: the process's own arrays, not the page cache of the memory-mapped cache files)
and peak RSS (VmHWM), with glibc's mmap threshold fixed at 1 MiB in those processes so that freed arrays leave
the count.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pixeldit  # noqa: E402,F401  (torchvision shim before torch-fidelity)
from benchmarks.host import cpu_isa  # noqa: E402
from evaluators.imagenet import evaluate_imagenet, resolve_weights  # noqa: E402
from evaluators.imagenet.extractors import get_extractor, resolve_extractor  # noqa: E402
from evaluators.imagenet.features import Cache, Layout, LazyExtractor, extract  # noqa: E402
from evaluators.imagenet.metrics import (  # noqa: E402
    fid_statistics,
    frechet_distance,
    frechet_distance_of_features,
)
from evaluators.imagenet.sources import open_images  # noqa: E402
from evaluators.imagenet.uncertainty import fid_vs_n  # noqa: E402
from pixeldit.data.digits import digits32_images  # noqa: E402
from pixeldit.infra.files import write_json_atomic  # noqa: E402

METRICS = ["fid", "kid", "precision", "recall"]


def make_images(count: int, seed: int) -> np.ndarray:
    """count×32×32×3 uint8: digits in a seeded order, each rolled by a random offset."""
    digits = digits32_images()[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.resize(np.arange(len(digits)), count))
    shifts = rng.integers(-4, 5, size=(count, 2))
    return np.stack([np.roll(digits[i], tuple(shift), axis=(0, 1)) for i, shift in zip(order, shifts)])


LOAD: dict[str, list[float]] = {}   # 1-minute load average before and after each phase (shared machines)


def timed(call, phase: str):
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    LOAD[phase] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result, seconds


def run_torch_fidelity(samples: np.ndarray, reference: np.ndarray, weights_path: str, device: torch.device) -> dict:
    import torch_fidelity
    from torch.utils.data import Dataset

    class Images(Dataset):
        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            return torch.from_numpy(np.ascontiguousarray(self.images[index].transpose(2, 0, 1)))

    kwargs = dict(input1=Images(samples), input2=Images(reference), cuda=device.type == "cuda", fid=True, kid=True,
                  prc=True, feature_extractor="inception-v3-compat", feature_extractor_weights_path=weights_path,
                  cache=False, verbose=False)
    if min(len(samples), len(reference)) < 1000:
        kwargs["kid_subset_size"] = min(len(samples), len(reference))
    return torch_fidelity.calculate_metrics(**kwargs)


def frechet_routes(count: int, dim: int = 2048) -> dict:
    """The three routes for one sample set (count×dim correlated features) against one (mu, sigma): seconds,
    ratios against ADM's sqrtm and relative differences; gram takes the sample features, as the evaluator does."""
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    samples, reference = ((rng.standard_normal((count, dim)) @ mixing + shift).astype(np.float32)
                          for shift in (0.0, 0.1))
    sample_stats, reference_stats = fid_statistics(samples), fid_statistics(reference)
    values, seconds = {}, {}
    for route in ("sqrtm", "eigh", "gram"):
        values[route], seconds[route] = timed(
            lambda: frechet_distance_of_features(samples, *reference_stats, route=route), f"frechet_{route}")
    assert values["eigh"] == frechet_distance(*sample_stats, *reference_stats, route="eigh")
    return {"dim": dim, "features_per_set": count, "values": values,
            "seconds": {route: round(value, 3) for route, value in seconds.items()},
            "ratio_sqrtm_over_eigh": round(seconds["sqrtm"] / seconds["eigh"], 2),
            "ratio_sqrtm_over_gram": round(seconds["sqrtm"] / seconds["gram"], 2),
            "relative_difference": {route: abs(values[route] - values["sqrtm"]) / abs(values["sqrtm"])
                                    for route in ("eigh", "gram")}}


def _random_weights_network(name: str, device: torch.device):
    """The extractor's network with seeded random weights of its real config (speed only)."""
    from evaluators.imagenet import clip, dinov2

    torch.manual_seed(0)
    entry = get_extractor(name)
    if name == "dinov2":
        network = dinov2.DinoV2ViT(**entry.config).eval()
        return dinov2.DINOv2Features(network, device, size=entry.input_resolution)
    if name == "clip":
        return clip.CLIPFeatures(clip.build_network(entry.config).eval(), device, size=entry.input_resolution)
    raise ValueError(f"no random-weights stand-in for extractor {name!r}")


def extractor_throughput(names: list[str], count: int, device: torch.device, batch_size: int) -> dict:
    """images/s of each extractor's network pass (preprocessing included) on `count` digits."""
    images = make_images(count, seed=3)
    out = {}
    for name in names:
        if name == "inception":
            weights = resolve_weights("offline")
            network, note = LazyExtractor(weights, device)(), f"real weights ({weights.name})"
        else:
            resolved = resolve_extractor(name)
            if isinstance(resolved, str):
                network, note = _random_weights_network(name, device), "seeded random weights of the real config"
            else:
                network, note = resolved.entry.build(resolved.path, resolved.entry, device), "real weights"
        network(images[:batch_size])                                        # warm-up: allocations, oneDNN plans
        _, seconds = timed(lambda network=network: [network(images[begin:begin + batch_size])
                                                    for begin in range(0, count, batch_size)], f"extractor_{name}")
        out[name] = {"images": count, "batch_size": batch_size, "seconds": round(seconds, 2),
                     "images_per_second": round(count / seconds, 3),
                     "seconds_per_1000_images": round(1000 * seconds / count, 1), "weights": note,
                     "input_resolution": get_extractor(name).input_resolution}
        del network
    return out


class _StandIn:
    """A 2048-d "network" for the memory measurement: relu of a fixed random projection of the pixels."""

    def __init__(self):
        self.device = torch.device("cpu")
        self.projection = torch.randn(32 * 32 * 3, 2048, generator=torch.Generator().manual_seed(0)) / 55

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(images.reshape(len(images), -1)).float() / 255
        return {"features": torch.relu(x @ self.projection).numpy()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _memory_child(count: int, mode: str, folder: str, queue) -> None:
    """In a fresh process: the FD of `count` images by `mode` ("streamed": the evaluator's path; "stacked": np.cov
    of all features), reporting peak anonymous memory and peak RSS in MiB."""
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _status_kib("RssAnon"))
            time.sleep(0.005)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    folder = Path(folder)
    layout = Layout({"features": 2048}, {"stand-in": "relu projection, seed 0"}, {}, "stand-in features",
                    statistics=("features",))
    reference = np.load(folder / "reference_stats.npz")
    mu_ref, sigma_ref = reference["mu"], reference["sigma"]
    started = time.perf_counter()
    features = extract(open_images(folder / f"samples-{count}.npz"), layout, _StandIn,
                       cache=Cache(folder / f"cache-{mode}-{count}"), batch_size=250)
    if mode == "streamed":
        fd = frechet_distance(*features.moments("features"), mu_ref, sigma_ref, route="eigh")
        curve = fid_vs_n(features.arrays["features"], mu_ref, sigma_ref, full_fid=fd)
    else:       # the evaluator before streaming: np.cov of all rows, FID(N) by weighted resampling of all rows
        fd = frechet_distance(*fid_statistics(features.arrays["features"]), mu_ref, sigma_ref, route="eigh")
        curve = fid_vs_n(features.arrays["features"], mu_ref, sigma_ref, full_fid=fd,
                         method="gram" if count <= 2048 else "root")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    queue.put({"n": count, "mode": mode, "fd": fd, "fid_vs_n": curve["fid"],
               "seconds": round(seconds, 2), "peak_anon_mib": round(max(peak[0], _status_kib("RssAnon")) / 1024, 1),
               "peak_rss_mib": round(_status_kib("VmHWM") / 1024, 1)})


def streaming_memory(counts: list[int]) -> dict:
    """Peak memory of the streamed and the stacked FD path at each count, each in a fresh process."""
    folder = Path(tempfile.mkdtemp(prefix="eval-memory-"))
    try:
        stand_in = _StandIn()
        reference = stand_in(make_images(2000, seed=5))["features"]
        mu, sigma = fid_statistics(reference)
        np.savez(folder / "reference_stats.npz", mu=mu, sigma=sigma)
        for count in counts:
            np.savez(folder / f"samples-{count}.npz", arr_0=make_images(count, seed=6))
        context = multiprocessing.get_context("spawn")
        # glibc's dynamic mmap threshold keeps large freed blocks in the heap after the first ones are freed, so
        # RssAnon would also count memory the process no longer holds; a fixed threshold returns them at once
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
        runs = []
        for mode in ("streamed", "stacked"):
            for count in counts:
                queue = context.Queue()
                child = context.Process(target=_memory_child, args=(count, mode, str(folder), queue))
                child.start()
                runs.append(queue.get())
                child.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    peaks = {mode: {run["n"]: run["peak_anon_mib"] for run in runs if run["mode"] == mode}
             for mode in ("streamed", "stacked")}
    low, high = min(counts), max(counts)
    return {"runs": runs, "feature_dim": 2048, "network": "stand-in (relu of a fixed random projection)",
            "peak_anon_mib": peaks,
            "peak_anon_ratio_high_over_low": {mode: round(peak[high] / peak[low], 3) for mode, peak in peaks.items()},
            "counts": [low, high]}


def evaluator_against_torch_fidelity(args, device: torch.device) -> dict:
    """The evaluator (cold, cached, features cached) and torch-fidelity on the same 2N images, and the Fréchet
    routes at 2048-d."""
    work = Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    try:
        samples, reference = make_images(args.n, seed=1), make_images(args.n, seed=2)
        np.savez(work / "samples.npz", arr_0=samples)
        np.savez(work / "reference.npz", arr_0=reference)
        weights = resolve_weights(args.weights)
        call = lambda: evaluate_imagenet(work / "samples.npz", work / "reference.npz", metrics=METRICS,  # noqa: E731
                                         batch_size=args.batch_size, device=device, cache_dir=work / "cache",
                                         weights=args.weights, bootstrap=0)
        first, first_s = timed(call, "evaluator")
        cached, cached_s = timed(call, "evaluator_cached")
        shutil.rmtree(work / "cache" / "metrics")
        features_cached, features_cached_s = timed(call, "evaluator_features_cached")
        theirs, theirs_s = timed(lambda: run_torch_fidelity(samples, reference, str(weights.path), device),
                                 "torch_fidelity")
        frechet = frechet_routes(args.n)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    images = 2 * args.n
    ours_ips, theirs_ips = images / first_s, images / theirs_s
    timings = first["extra"]["timings_s"]
    return {
        "n_per_set": args.n, "images": images, "resolution": [32, 32], "weights": weights.name, "metrics": METRICS,
        "fid_bootstrap_resamples": 0,
        "evaluator": {"seconds": round(first_s, 2), "images_per_second": round(ours_ips, 2),
                      "feature_seconds": round(timings["features_samples"] + timings["features_reference"], 2),
                      "timings_s": timings, "values": first["values"]},
        "torch_fidelity": {"seconds": round(theirs_s, 2), "images_per_second": round(theirs_ips, 2),
                           "values": {key: float(value) for key, value in theirs.items()}},
        "ratio_evaluator_over_torch_fidelity": round(ours_ips / theirs_ips, 3),
        "cached_second_run": {"seconds": round(cached_s, 3), "speedup": round(first_s / cached_s, 1),
                              "cache": cached["extra"]["cache"]},
        "features_cached_metrics_recomputed": {"seconds": round(features_cached_s, 2),
                                               "speedup": round(first_s / features_cached_s, 1),
                                               "cache": features_cached["extra"]["cache"]},
        "frechet_2048": frechet,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per set (2N images in all)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/eval_throughput.json"))
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--weights", default="auto", help="auto | inception | offline")
    parser.add_argument("--extractors", default="inception,dinov2,clip",
                        help="extractors whose network pass is timed alone ('' for none)")
    parser.add_argument("--extractor-images", type=int, default=64, help="images per extractor timing")
    parser.add_argument("--memory", default="2000,5000,10000",
                        help="sample counts of the memory measurement ('' for none)")
    parser.add_argument("--skip-evaluator", action="store_true",
                        help="only the extractor and memory sections (no evaluator / torch-fidelity comparison)")
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    report = {"benchmark": "eval_throughput", "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": cpu_isa(),
              "platform": platform.platform(),
              "torch": torch.__version__, "load_average_1min": LOAD}
    if not args.skip_evaluator:
        report.update(evaluator_against_torch_fidelity(args, device))
    if args.extractors:
        report["extractors"] = extractor_throughput(args.extractors.split(","), args.extractor_images, device,
                                                    args.batch_size or (250 if device.type == "cuda" else 16))
    if args.memory:
        report["streaming_memory"] = streaming_memory([int(count) for count in args.memory.split(",")])
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
