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
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pixeldit  # noqa: E402,F401  (torchvision shim before torch-fidelity)
from evaluators.imagenet import evaluate_imagenet, resolve_weights  # noqa: E402
from evaluators.imagenet.metrics import (  # noqa: E402
    fid_statistics,
    frechet_distance,
    frechet_distance_of_features,
)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per set (2N images in all)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/eval_throughput.json"))
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--weights", default="auto", help="auto | inception | offline")
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
    report = {
        "benchmark": "eval_throughput", "n_per_set": args.n, "images": images, "resolution": [32, 32],
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "torch": torch.__version__, "weights": weights.name, "metrics": METRICS, "fid_bootstrap_resamples": 0,
        "load_average_1min": LOAD,
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
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
