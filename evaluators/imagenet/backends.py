"""Cross-check backends: torch-fidelity's and clean-fid's own metric code on the same Inception weights.

Their numbers follow their libraries' conventions, not ADM's, and are labelled with the backend in the
result; nothing here is mixed with the `adm` backend's values or caches.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.inception import EXTRACTOR_NAME, NETWORK_RESIZE, load_network, no_tf32
from evaluators.imagenet.reference import reference_summary
from evaluators.imagenet.sources import ImageSource

_NOT_IN = "unavailable: not computed by the {backend} backend ({why})"


def backend_unavailable(backend: str) -> dict[str, str]:
    if backend == "torch-fidelity":
        return {"sfid": _NOT_IN.format(backend=backend, why="torch-fidelity has no sFID")}
    return {metric: _NOT_IN.format(backend=backend, why="clean-fid computes FID and KID only")
            for metric in ("sfid", "is", "precision", "recall")}


class _Uint8CHW(Dataset):
    """An image source as torch-fidelity wants it: uint8 3×H×W tensors."""

    def __init__(self, source: ImageSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.source.image(index).transpose(2, 0, 1)))


def _run_torch_fidelity(plan, progress: bool):
    import torch_fidelity

    samples, reference = plan.samples, plan.reference.images
    want = set(plan.computed)
    subset = min(1000, len(samples), len(reference))
    kwargs = dict(input1=_Uint8CHW(samples), input2=_Uint8CHW(reference), cuda=plan.device.type == "cuda",
                  batch_size=plan.batch_size, isc="is" in want, fid="fid" in want, kid="kid" in want,
                  prc=bool(want & {"precision", "recall"}), feature_extractor="inception-v3-compat",
                  feature_extractor_weights_path=str(plan.weights.path), kid_subset_size=subset,
                  save_cpu_ram=True, cache=False, verbose=progress)
    with no_tf32():
        out = torch_fidelity.calculate_metrics(**kwargs)
    keys = {"fid": "frechet_inception_distance", "is": "inception_score_mean", "kid": "kernel_inception_distance_mean",
            "kid_std": "kernel_inception_distance_std", "precision": "precision", "recall": "recall"}
    values = {metric: float(out[key]) for metric, key in keys.items() if key in out}
    extra = {"torch_fidelity_output": {key: float(value) for key, value in out.items()}}
    protocol = {"suite": "torch-fidelity 0.4 calculate_metrics defaults",
                "extractor": {"name": EXTRACTOR_NAME, **plan.weights.card()}, "resize": NETWORK_RESIZE,
                "reference": reference_summary(plan.reference),
                "samples": {"count": len(samples), "resolution": list(samples.resolution)},
                "calculate_metrics": {"feature_extractor": "inception-v3-compat", "isc_splits": 10,
                                      "samples_shuffle": True, "rng_seed": 2020, "kid_subsets": 100,
                                      "kid_subset_size": subset, "prc_neighborhood": 3, "prc_batch_size": 10000,
                                      "save_cpu_ram": True, "input1": "samples", "input2": "reference images",
                                      "fid": "eigenvalue trace (not sqrtm)", "reference_statistics": "from images"}}
    return values, {}, extra, protocol


class _CleanResized(Dataset):
    """clean-fid's ResizeDataset for in-memory images: `build_resizer(mode)` then ToTensor (no rescale of floats)."""

    def __init__(self, source: ImageSource, mode: str):
        from cleanfid.resize import build_resizer

        self.source, self.resize = source, build_resizer(mode)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        resized = self.resize(self.source.image(index))          # 299×299×3 float32 in [0, 255]
        return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))


class Pool3OfResized:
    """clean-fid's `custom_feat_extractor`: B×3×299×299 floats in [0, 255] -> pool3 of the same network.

    torch-fidelity's network only takes uint8 images it resizes itself, so the float input is injected
    at its first convolution (a forward pre-hook replaces the input with `(x - 128) / 128`); the network's
    own 299->299 resize of a placeholder is the identity and its result is discarded.
    """

    def __init__(self, weights, device: torch.device):
        self.network = load_network(weights, device, logits=False)
        self.device = device
        self._input: torch.Tensor | None = None
        self.network.Conv2d_1a_3x3.register_forward_pre_hook(lambda module, args: ((self._input - 128) / 128,))

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self._input = images.to(self.device, torch.float32)
        placeholder = torch.zeros(images.shape, dtype=torch.uint8, device=self.device)
        with no_tf32():
            pool3 = self.network(placeholder)[0]
        self._input = None
        return pool3


@contextlib.contextmanager
def _numpy_seed(seed: int):
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _run_clean_fid(plan, progress: bool):
    try:
        from cleanfid import fid as clean
    except ImportError as error:
        raise ImageNetEvalError(f"the clean-fid backend needs clean-fid ({error}); "
                                f"`pip install clean-fid==0.1.35`") from None

    mode = "clean"
    extractor = Pool3OfResized(plan.weights, plan.device)

    def features(source: ImageSource) -> np.ndarray:
        loader = DataLoader(_CleanResized(source, mode), batch_size=plan.batch_size, shuffle=False, num_workers=0)
        return np.concatenate([clean.get_batch_features(batch, extractor, plan.device) for batch in loader])

    samples, reference = features(plan.samples), features(plan.reference.images)
    values = {}
    want = set(plan.computed)
    if "fid" in want:
        values["fid"] = float(clean.fid_from_feats(samples, reference))
    if "kid" in want:
        with _numpy_seed(0):
            values["kid"] = float(clean.kernel_distance(samples, reference))
    unavailable = {"kid_std": _NOT_IN.format(backend="clean-fid", why="clean-fid reports the KID mean only")}
    protocol = {"suite": "clean-fid 0.1.35 (mode 'clean') with custom_feat_extractor",
                "extractor": {"name": "torch-fidelity inception-v3-compat network, pool3, fed clean-fid's resize",
                              **plan.weights.card()},
                "resize": "clean-fid 'clean': PIL bicubic to 299×299 per channel on float32, no requantisation",
                "reference": reference_summary(plan.reference),
                "samples": {"count": len(plan.samples), "resolution": list(plan.samples.resolution)},
                "fid": "cleanfid.fid.fid_from_feats (sqrtm, no imaginary check)",
                "kid": "cleanfid.fid.kernel_distance (100 subsets, max size 1000, poly degree 3); numpy's global "
                       "RNG seeded 0 by pixeldit-bench (clean-fid leaves it unseeded)",
                "reference_statistics": "from the reference images"}
    return values, unavailable, {"clean_fid_mode": mode}, protocol


def run_backend(plan, progress: bool = False):
    """(values, unavailable, extra, protocol) of a cross-check backend."""
    runner = {"torch-fidelity": _run_torch_fidelity, "clean-fid": _run_clean_fid}[plan.backend]
    return runner(plan, progress)
