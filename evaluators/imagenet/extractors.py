"""The feature extractors the ImageNet evaluator can score with, one registry entry each.

Each entry names its network, its weight file (a `pixeldit-bench weights` registry name: URL, licence,
checksum), the input resolution, how images are resized to it (kind, antialias, from what), the
normalisation, the output layer and its dimension:

* `inception`: TF-Inception-v3 pool3 (and mixed_6/conv for sFID, logits for IS), ADM's suite; its weights
  are resolved by `inception.resolve_weights` and its metrics computed by `evaluate._run_adm`, as before;
* `dinov2`: DINOv2 ViT-L/14 CLS token after the final LayerNorm, exactly as EDM2's `calculate_metrics.py`
  (`DINOv2Detector`, resize mode "torch") feeds it; FD_DINOv2 and the other metrics over its features;
* `clip`: CLIP ViT-L/14 @ 336 image embedding exactly as google-research's cmmd computes it (clip.py); CMMD.

Extra extractors (every one but `inception`) give the metrics their entry lists, each named `<metric>_<name>`
(`fd_dinov2`, `density_dinov2`, ...; `EXTRA_METRICS` says what each is). Their weights are never downloaded
here and never replaced by random ones: a missing file makes the extractor's metrics unavailable with the
command that fetches it (as IS without the logits weights).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evaluators.imagenet import clip, dinov2
from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.features import Layout
from evaluators.imagenet.inception import EXTRACTOR_NAME
from evaluators.imagenet.sources import HashMemo, file_sha256
from pixeldit.infra import weights as registry

DEFAULT_FEATURES = ("inception",)
LAYER = "features"                                   # the one array an extra extractor's cache entry holds
# What an extra extractor can give, in result order (value name <metric>_<name>; KID adds kid_<name>_std).
EXTRA_METRICS = {
    "fd": "Fréchet distance, ADM's rules (FD_DINOv2 for dinov2, as EDM2)",
    "fd_infinity": "FD∞ (Chong & Forsyth 2020): FD at 15 counts from 5,000 up, extrapolated linearly in 1/N",
    "kid": "kernel distance, torch-fidelity's KID (cubic polynomial kernel, 100 subsets)",
    "precision": "precision as the prdc package (Naeem et al. 2020), k = 5",
    "recall": "recall as the prdc package, k = 5",
    "density": "density (Naeem et al. 2020), k = 5, as prdc",
    "coverage": "coverage (Naeem et al. 2020), k = 5, as prdc",
    "cmmd": "CMMD (Jayasumana et al. 2024): MMD² with a Gaussian RBF kernel, sigma 10, x 1000, unit-norm embeddings",
}
# dgm-eval's set over any encoder; CMMD is defined on CLIP embeddings and is listed by the CLIP entry
DEFAULT_EXTRA_METRICS = ("fd", "fd_infinity", "kid", "precision", "recall", "density", "coverage")


@dataclass(frozen=True)
class Extractor:
    name: str
    network: str
    weights: str                    # `pixeldit-bench weights` registry name
    input_resolution: int
    resize: dict                    # kind, antialias, source ("uint8"), clamp/requantise
    normalisation: str
    output_layer: str
    dim: int
    reproduces: str = ""            # the upstream code path the features match
    config: dict = field(default_factory=dict)      # architecture arguments for `build`
    metrics: tuple[str, ...] = DEFAULT_EXTRA_METRICS  # keys of EXTRA_METRICS this extractor gives
    # (weights path, entry, device) -> callable: uint8 (B, H, W, 3) -> {LAYER: (B, dim) float32}, with `.device`
    build: Callable | None = field(default=None, compare=False)

    def card(self) -> dict:
        card = {"name": self.name, "network": self.network, "weights": self.weights,
                "input_resolution": self.input_resolution, "resize": dict(self.resize),
                "normalisation": self.normalisation, "output_layer": self.output_layer, "dim": self.dim}
        if self.reproduces:
            card["reproduces"] = self.reproduces
        if self.config:
            card["config"] = dict(self.config)
        if self.name != "inception":
            card["metrics"] = list(self.metrics)
        return card


EXTRACTORS: dict[str, Extractor] = {}


def register_extractor(entry: Extractor) -> Extractor:
    """Add an entry; the same name with different content is an error."""
    unknown = sorted(set(entry.metrics) - set(EXTRA_METRICS))
    if unknown:
        raise ValueError(f"extractor {entry.name!r} lists unknown metrics {unknown}; known: {', '.join(EXTRA_METRICS)}")
    existing = EXTRACTORS.get(entry.name)
    if existing is not None and existing != entry:
        raise ValueError(f"extractor {entry.name!r} is already registered with different content")
    EXTRACTORS[entry.name] = entry
    return entry


def get_extractor(name: str) -> Extractor:
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ImageNetEvalError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}") from None


def normalise_features(features) -> tuple[str, ...]:
    """("inception", extras...) from a comma string or a sequence; inception (ADM's suite) is always first."""
    if features is None:
        return DEFAULT_FEATURES
    if isinstance(features, str):
        features = [part.strip() for part in features.split(",") if part.strip()]
    names = list(dict.fromkeys(["inception", *features]))
    for name in names:
        get_extractor(name)
    return tuple(names)


def metric_names(name: str) -> dict[str, str]:
    """{metric: value name} of an extractor's metrics, in result order."""
    return {metric: f"{metric}_{name}" for metric in get_extractor(name).metrics}


def unavailable_reason(entry: Extractor) -> str:
    """The note of an extractor whose weight file is absent (the format of inception.UNAVAILABLE_IS)."""
    return (f"unavailable: {entry.name} weights not installed (run `pixeldit-bench weights fetch {entry.weights}` "
            f"on a connected machine, or copy {registry.get_entry(entry.weights).filename} to "
            f"{registry.weights_dir()})")


@dataclass
class ResolvedExtractor:
    """An extra extractor whose weight file is on disk, with the file's sha256."""
    entry: Extractor
    path: Path
    sha256: str

    def card(self) -> dict:
        file = registry.get_entry(self.entry.weights)
        return {**self.entry.card(), "weights_file": {"name": file.name, "file": file.filename, "url": file.url,
                                                      "licence": file.licence, "sha256": self.sha256}}

    def layout(self) -> Layout:
        entry = self.entry
        identity = {"extractor": entry.name, "weights_sha256": self.sha256, "input_resolution": entry.input_resolution,
                    "resize": entry.resize, "normalisation": entry.normalisation, "output_layer": entry.output_layer,
                    "config": entry.config}
        return Layout({LAYER: entry.dim}, identity, self.card(), f"{entry.name} features", statistics=(LAYER,))

    def lazy(self, device) -> Callable:
        """get_extractor for `features.extract`: builds the network on first use only (a cache hit never does)."""
        built = []

        def get():
            if not built:
                built.append(self.entry.build(self.path, self.entry, device))
            return built[0]
        return get


def resolve_extractor(name: str, memo: HashMemo | None = None) -> ResolvedExtractor | str:
    """The extractor with its weight file, or the reason it is unavailable (file absent). A file that does not
    match the registry's sha256 raises ChecksumError: a damaged file is an error, not an absence."""
    entry = get_extractor(name)
    if entry.build is None:
        raise ImageNetEvalError(f"extractor {name!r} is computed by the ADM suite, not as an extra extractor")
    try:
        path = registry.resolve(entry.weights)
    except registry.MissingWeightsError:
        return unavailable_reason(entry)
    sha256 = file_sha256(path, memo)
    expected = registry.get_entry(entry.weights).sha256
    if expected and sha256 != expected:
        raise registry.ChecksumError(f"{path} does not match the registry's sha256 for {entry.weights!r}: got "
                                     f"{sha256}, expected {expected}. Delete it and run `pixeldit-bench weights "
                                     f"fetch {entry.weights}`.")
    return ResolvedExtractor(entry, path, sha256)


def build_dinov2(path: Path, entry: Extractor, device) -> dinov2.DINOv2Features:
    network = dinov2.load_official(path, device, config=entry.config)
    return dinov2.DINOv2Features(network, device, size=entry.input_resolution, layer=LAYER)


def dinov2_extractor(name: str, weights: str, config: dict, input_resolution: int = dinov2.INPUT_SIZE) -> Extractor:
    """A DINOv2 entry (EDM2's preprocessing) for an architecture config; `dinov2` is ViT-L/14 at 224."""
    size = input_resolution
    return Extractor(
        name=name, network=f"DINOv2 ViT (own module, official parameter names; embed {config['embed_dim']}, depth "
                           f"{config['depth']}, patch {config['patch_size']}), no registers",
        weights=weights, input_resolution=size,
        resize={"kind": "bicubic", "antialias": True, "from": "uint8 as float32 0..255",
                "to": [size, size], "implementation": "torch.nn.functional.interpolate",
                "clamp": False, "requantise": False},
        normalisation="x / 255, then (x - ImageNet mean (0.485, 0.456, 0.406)) / std (0.229, 0.224, 0.225)",
        output_layer="CLS token after the final LayerNorm (x_norm_clstoken)", dim=config["embed_dim"],
        reproduces="NVlabs/edm2 calculate_metrics.py DINOv2Detector (resize_mode 'torch') on torch.hub "
                   "facebookresearch/dinov2 dinov2_vitl14",
        config=dict(config), build=build_dinov2)


INCEPTION_EXTRACTOR = register_extractor(Extractor(
    name="inception", network=EXTRACTOR_NAME, weights="inception", input_resolution=299,
    resize={"kind": "TF1 bilinear (align_corners=False, no antialias)", "antialias": False, "from": "uint8",
            "to": [299, 299], "implementation": "inside the network (torch-fidelity inception-v3-compat)"},
    normalisation="(x - 128) / 128",
    output_layer="pool3 (FID, precision/recall, KID); mixed_6/conv first 7 channels, 2023-d (sFID); "
                 "pool3 @ fc.weight.T (IS)",
    dim=2048, reproduces="openai/guided-diffusion evaluations/evaluator.py (ADM's TF Inception graph)"))

DINOV2_EXTRACTOR = register_extractor(dinov2_extractor("dinov2", dinov2.DINOV2_VITL14.name, dinov2.VITL14))

# CMMD only: the features reproduce cmmd's embedding path (its crop, PIL resize and L2 normalisation), which other
# metrics over CLIP (dgm-eval's) do not use.
CLIP_EXTRACTOR = register_extractor(Extractor(
    name="clip", network=clip.NETWORK, weights=clip.CLIP_VITL14_336.name, input_resolution=clip.INPUT_SIZE,
    resize=clip.RESIZE, normalisation=clip.NORMALISATION, output_layer=clip.OUTPUT_LAYER, dim=clip.FEATURE_DIM,
    reproduces=clip.REPRODUCES, config=dict(clip.VITL14_336), metrics=("cmmd",), build=clip.build_clip))
