"""`evaluate_imagenet`: FID, sFID, IS, precision/recall and KID of a sample set against a reference.

Backends (never mixed inside one result):

* `adm` (default): ADM's evaluator semantics on torch-fidelity's TF-compatible Inception (see metrics.py);
* `torch-fidelity`: `torch_fidelity.calculate_metrics` with its own defaults (IS shuffled, FID by
  eigenvalues, its PRC), the `inception-v3-compat` extractor pointed at the same weights file;
* `clean-fid`: clean-fid's "clean" resize (PIL bicubic to 299 on floats) and its FID/KID code, with
  `custom_feat_extractor` = the same network's pool3.

A second run on the same samples, reference and settings reads features (and the metric values) from
the cache, see features.py.

With the FID (adm backend) come `extra["fid_bootstrap"]` (a seeded bootstrap over the samples, reference fixed)
and `extra["fid_vs_n"]` (FID of nested first-N subsets), see uncertainty.py; the values themselves are unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evaluators.imagenet.backends import backend_unavailable, run_backend
from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.extractor_metrics import (
    CMMD_SCALE,
    CMMD_SIGMA,
    DC_K,
    FD_INFINITY_MIN_COUNT,
    FD_INFINITY_POINTS,
    cmmd,
    fd_infinity,
    prdc,
)
from evaluators.imagenet.extractors import (
    LAYER,
    ResolvedExtractor,
    get_extractor,
    metric_names,
    normalise_features,
    resolve_extractor,
)
from evaluators.imagenet.features import (
    DIMS,
    Cache,
    FeatureSet,
    LazyExtractor,
    default_batch_size,
    extract,
    feature_key,
)
from evaluators.imagenet.inception import (
    EXTRACTOR_NAME,
    NETWORK_RESIZE,
    UNAVAILABLE_IS,
    InceptionWeights,
    resolve_weights,
)
from evaluators.imagenet.metrics import (
    DEFAULT_FRECHET_ROUTE,
    DEFAULT_IS_SPLIT_RULE,
    FRECHET_ROUTES,
    IS_SPLIT_RULES,
    KID_SEED,
    KID_SUBSETS,
    PR_BLOCK,
    PR_K,
    frechet_distance,
    frechet_distance_of_features,
    inception_score,
    is_splits,
    kernel_inception_distance,
    kid_subset_size,
    precision_recall,
)
from evaluators.imagenet.reference import (
    Reference,
    check_compatible,
    check_extractor_compatible,
    open_reference,
    reference_summary,
)
from evaluators.imagenet.sources import ImageSource, open_images
from evaluators.imagenet.uncertainty import (
    DEFAULT_BOOTSTRAP_SEED,
    FID_VS_N_START,
    RESAMPLED,
    bootstrap_fid,
    fid_vs_n,
    fid_vs_n_sizes,
    resolve_resamples,
)
from evaluators.registry import load_task
from pixeldit.infra.devices import setup_distributed
from pixeldit.infra.results import make_result

VERSION = load_task("imagenet")["version"]
METRICS = ("fid", "sfid", "is", "precision", "recall", "kid")
BACKENDS = ("adm", "torch-fidelity", "clean-fid")
_NUMERIC_SOURCES = ("evaluate.py", "metrics.py", "features.py", "inception.py", "backends.py", "uncertainty.py",
                    "statistics.py")
PRDC_METRICS = ("precision", "recall", "density", "coverage")
# metrics of an extra extractor that need the reference's own images (not only its statistics)
RAW_FEATURE_METRICS = ("kid", *PRDC_METRICS, "cmmd")


@dataclass
class Plan:
    """Everything resolved before any feature is computed (what `--dry-run` prints)."""
    samples: ImageSource
    reference: Reference
    weights: InceptionWeights
    backend: str
    metrics: tuple[str, ...]
    device: torch.device
    batch_size: int
    cache: Cache
    unavailable: dict[str, str] = field(default_factory=dict)
    frechet: str = DEFAULT_FRECHET_ROUTE
    is_split_rule: str = DEFAULT_IS_SPLIT_RULE
    bootstrap: int = 0                        # FID bootstrap resamples (resolved: 0 = none)
    bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED
    bootstrap_note: str | None = None         # why no bootstrap runs, when none does
    features: tuple[str, ...] = ("inception",)
    # extra extractors (all but inception): the resolved weights, or the reason their metrics are unavailable
    extractors: dict[str, ResolvedExtractor | str] = field(default_factory=dict)

    @property
    def extra_metrics(self) -> tuple[str, ...]:
        """The value names of every extra extractor's metrics (kid_<name> followed by kid_<name>_std), in
        --features order."""
        return tuple(value for name in self.extractors for metric, value in metric_names(name).items()
                     for value in ((value, f"{value}_std") if metric == "kid" else (value,)))

    @property
    def computed(self) -> tuple[str, ...]:
        return tuple(metric for metric in self.metrics if metric not in self.unavailable)

    def summary(self) -> dict:
        memo = self.cache.memo
        out = {"backend": self.backend, "metrics": list(self.computed), "unavailable": dict(self.unavailable),
               "samples": {"source": self.samples.describe(), "count": len(self.samples),
                           "resolution": list(self.samples.resolution)},
               "reference": reference_summary(self.reference), "weights": self.weights.card(),
               "device": str(self.device), "batch_size": self.batch_size, "frechet": self.frechet,
               "is_split_rule": self.is_split_rule,
               "fid_bootstrap": {"resamples": self.bootstrap, "seed": self.bootstrap_seed,
                                 **({"note": self.bootstrap_note} if self.bootstrap_note else {})},
               "cache_root": str(self.cache.root) if self.cache.root else None}
        if self.backend == "adm" and self.cache.root:
            sets = {"samples": self.samples, "reference": self.reference.images}
            out["cached_features"] = {
                name: (self.cache.feature_dir(feature_key(source.content_hash(memo), self.weights))
                       / "meta.json").is_file()
                for name, source in sets.items() if source is not None}
        if self.extractors:
            out["features"] = list(self.features)
            out["extractors"] = {name: extractor if isinstance(extractor, str) else extractor.card()
                                 for name, extractor in self.extractors.items()}
        return out


def _normalise_metrics(metrics) -> tuple[str, ...]:
    if metrics is None:
        return METRICS
    if isinstance(metrics, str):
        metrics = [part.strip() for part in metrics.split(",") if part.strip()]
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ImageNetEvalError(f"unknown metrics {unknown or metrics}; choose from {', '.join(METRICS)}")
    return tuple(metric for metric in METRICS if metric in metrics)


def plan_imagenet(samples, reference, *, backend: str = "adm", metrics=None, batch_size: int | None = None,
                  device=None, cache_dir=None, weights: str = "auto", expected_samples: int | None = None,
                  frechet: str = DEFAULT_FRECHET_ROUTE, is_split_rule: str = DEFAULT_IS_SPLIT_RULE,
                  bootstrap: int | None = None, bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED, features=None) -> Plan:
    """Open and validate inputs, resolve weights and check the protocol; computes no features.

    bootstrap: FID bootstrap resamples; None = `uncertainty.DEFAULT_BOOTSTRAP_RESAMPLES` where that is cheap
    (no more samples than pool3 dimensions), else none; 0 = none.
    features: extractor names (`extractors.EXTRACTORS`, comma string or sequence), inception always included."""
    if backend not in BACKENDS:
        raise ImageNetEvalError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if frechet not in FRECHET_ROUTES:
        raise ImageNetEvalError(f"unknown Fréchet route {frechet!r}; choose from {', '.join(FRECHET_ROUTES)}")
    if is_split_rule not in IS_SPLIT_RULES:
        raise ImageNetEvalError(f"unknown IS split rule {is_split_rule!r}; choose from {', '.join(IS_SPLIT_RULES)}")
    metrics = _normalise_metrics(metrics)
    if isinstance(bootstrap_seed, bool) or not isinstance(bootstrap_seed, int) or bootstrap_seed < 0:
        raise ImageNetEvalError(f"the bootstrap seed must be a non-negative integer, got {bootstrap_seed!r}")
    features = normalise_features(features)
    if backend != "adm" and len(features) > 1:
        raise ImageNetEvalError(f"extra feature extractors ({', '.join(features[1:])}) run with backend='adm' only, "
                                f"not {backend!r}")
    cache = Cache(cache_dir)
    sample_set = open_images(samples, name="samples")
    ref = open_reference(reference, cache.memo)
    chosen = resolve_weights(weights, cache.memo)
    check_compatible(ref, sample_set, chosen, expected_samples)
    _, _, device = setup_distributed(device)          # under torchrun: joins the process group
    unavailable = {}
    if not chosen.has_logits:
        unavailable["is"] = UNAVAILABLE_IS
    if ref.images is None:
        for metric in ("precision", "recall", "kid"):
            unavailable[metric] = f"unavailable: reference {ref.description} holds statistics only (no arr_0 images)"
        if "mu_s" not in ref.stat_keys:
            unavailable["sfid"] = f"unavailable: reference {ref.description} has no mu_s/sigma_s"
    elif "mu" in ref.stat_keys and "mu_s" not in ref.stat_keys:
        unavailable["sfid"] = (f"unavailable: reference {ref.description} stores mu/sigma but not mu_s/sigma_s "
                               f"(sFID from its {len(ref.images)} images would not match FID's statistics)")
    if backend != "adm":
        if ref.images is None:
            raise ImageNetEvalError(f"the {backend} backend computes reference statistics from images, but "
                                    f"{ref.description} holds statistics only; use backend='adm'")
        unavailable.update(backend_unavailable(backend))
    unavailable = {metric: reason for metric, reason in unavailable.items() if metric in metrics}
    resamples, note = resolve_resamples(bootstrap, len(sample_set), DIMS["pool3"])
    if backend != "adm" and resamples:
        resamples, note = 0, f"not run: the FID bootstrap is computed by the adm backend only (backend {backend})"
    extractors = {name: resolve_extractor(name, cache.memo) for name in features[1:]}
    for name, extractor in extractors.items():
        if isinstance(extractor, ResolvedExtractor):
            check_extractor_compatible(ref, extractor)
        unavailable.update(_extractor_unavailable(name, extractor, ref, len(sample_set)))
    return Plan(sample_set, ref, chosen, backend, metrics, device, batch_size or default_batch_size(device), cache,
                unavailable, frechet, is_split_rule, resamples, bootstrap_seed, note, features, extractors)


def _extractor_unavailable(name: str, extractor: ResolvedExtractor | str, ref: Reference, count: int) -> dict:
    """{value name: reason} of an extra extractor's metrics that cannot be computed (kid's std follows kid)."""
    reasons = {}
    has_images = ref.images is not None
    for metric, value in metric_names(name).items():
        if isinstance(extractor, str):
            reason = extractor
        elif metric in RAW_FEATURE_METRICS and not has_images:
            reason = (f"unavailable: reference {ref.description} holds statistics only (no arr_0 images to extract "
                      f"{name} features from)")
        elif not has_images and not ref.has_stats(f"fd_{name}"):
            reason = (f"unavailable: reference {ref.description} holds neither {name} statistics (mu_{name}/"
                      f"sigma_{name}) nor images; build one with `pixeldit-bench ref build DATASET --features "
                      f"inception,{name} ...`")
        elif metric == "fd_infinity" and count <= FD_INFINITY_MIN_COUNT:
            reason = (f"unavailable: FD∞ extrapolates from FD at {FD_INFINITY_MIN_COUNT} images upwards, so it needs "
                      f"more than {FD_INFINITY_MIN_COUNT} samples; got {count}")
        elif metric in PRDC_METRICS and min(count, len(ref.images)) < DC_K + 1:
            reason = (f"unavailable: {metric} (k={DC_K}) needs at least {DC_K + 1} sample and reference images, "
                      f"got {count} and {len(ref.images)}")
        elif metric == "kid" and min(count, len(ref.images)) < 2:
            reason = f"unavailable: KID needs at least 2 images per set, got {count} and {len(ref.images)}"
        else:
            continue
        reasons[value] = reason
        if metric == "kid":
            reasons[f"{value}_std"] = reason
    return reasons


def _code_digest() -> str:
    """Hash of the code that produces the numbers: a code change invalidates memoised metric values."""
    digest = hashlib.sha256(VERSION.encode())
    for name in _NUMERIC_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def _protocol(plan: Plan) -> dict:
    count = len(plan.samples)
    ref_count = len(plan.reference.images) if plan.reference.images is not None else None
    protocol = {
        "suite": "ADM evaluator semantics (openai/guided-diffusion evaluations/evaluator.py)",
        "extractor": {"name": EXTRACTOR_NAME, **plan.weights.card(),
                      "pool3": "2048-d (FID, precision/recall, KID)",
                      "spatial": "Mixed_6d.branch1x1 = TF mixed_6/conv, NHWC, first 7 channels, 2023-d (sFID)",
                      "logits_layer": "pool3 @ fc.weight.T, no bias (IS)", "tf32": False},
        "resize": NETWORK_RESIZE,
        "reference": reference_summary(plan.reference),
        "samples": {"count": count, "resolution": list(plan.samples.resolution)},
        "fid": {"route": plan.frechet, "trace_sqrt": FRECHET_ROUTES[plan.frechet],
                **({"sqrtm": "scipy.linalg.sqrtm", "eps": 1e-6, "imaginary_atol": 1e-3} if plan.frechet == "sqrtm"
                   else {}),
                "reference_statistics": "file" if "mu" in plan.reference.stat_keys else "reference images",
                "statistics": _STATISTICS_RULE},
        "is": {**(is_splits(count, plan.is_split_rule) if count >= 10 else {}), "order": "file order, no shuffling",
               "softmax": "float32", "reported": "mean of the split scores"},
        "precision_recall": {"k": PR_K, "distance": "squared euclidean", "fp16_distances": True,
                             "fp32_fallback": "per block, when the fp16 block is not finite",
                             "row_batch": PR_BLOCK, "col_batch": PR_BLOCK,
                             "reference_set": "reference images (arr_0)"},
        "kid": {"implementation": "torch_fidelity.metric_kid.kid_features_to_metric", "subsets": KID_SUBSETS,
                "subset_size": kid_subset_size(count, ref_count) if ref_count else None, "kernel": "poly",
                "degree": 3, "gamma": "1/2048", "coef0": 1, "rng_seed": KID_SEED,
                "order": "input1 = samples, input2 = reference images"},
    }
    if plan.extractors:
        protocol["extractors"] = {name: _extractor_protocol(plan, name) for name in plan.extractors}
    return protocol


def _uncertainty_card(plan: Plan) -> dict:
    """How extra.fid_bootstrap and extra.fid_vs_n are made: extra.fid_uncertainty, not in the protocol card,
    since the FID value does not depend on it (the report keys its tables by the protocol card)."""
    card = {"bootstrap_resamples": plan.bootstrap, "bootstrap_seed": plan.bootstrap_seed}
    if plan.bootstrap:
        card.update({"resampled": RESAMPLED, "statistics": "counts as weights: mu = sum c x / n, "
                     "sigma = (X^T diag(c) X - n mu mu^T) / (n - 1), float64",
                     "interval": "2.5/97.5 percentiles of the resampled FIDs, not bias-corrected",
                     "frechet": "symmetric eigenvalue route, exact to ~1e-12 of the direct computation"})
    else:
        card["bootstrap_note"] = plan.bootstrap_note
    card["fid_vs_n"] = {"sizes": fid_vs_n_sizes(len(plan.samples), FID_VS_N_START), "seed": plan.bootstrap_seed,
                        "subsets": "first N of a seeded permutation (nested); the full count is the reported FID"}
    return card


def _extractor_protocol(plan: Plan, name: str) -> dict:
    """The protocol block of one extra extractor: its card (weights sha256, resize), counts, metric rules."""
    extractor = plan.extractors[name]
    ref = plan.reference
    ref_count = len(ref.images) if ref.images is not None else None
    metrics = metric_names(name)
    block = {"card": extractor.card() if isinstance(extractor, ResolvedExtractor)
             else {**get_extractor(name).card(), "weights_file": None},
             "counts": {"samples": len(plan.samples), "reference": ref_count},
             "reference_statistics": _extractor_reference_statistics(ref, name),
             "statistics": _STATISTICS_RULE}
    rules = {"fd": {"route": plan.frechet, "trace_sqrt": FRECHET_ROUTES[plan.frechet]},
             "fd_infinity": {"min_count": FD_INFINITY_MIN_COUNT, "points": FD_INFINITY_POINTS, "seed": 0,
                             "reproduces": "mchong6/FID_IS_infinity calculate_FID_infinity (seeded shuffles)"},
             "kid": {"implementation": "torch_fidelity.metric_kid.kid_features_to_metric", "subsets": KID_SUBSETS,
                     "subset_size": kid_subset_size(len(plan.samples), ref_count) if ref_count else None,
                     "kernel": "poly", "degree": 3, "gamma": "1/dim", "coef0": 1, "rng_seed": KID_SEED},
             "prdc": {"k": DC_K, "implementation": "prdc compute_prdc semantics (strict <), float64",
                      "reference_set": "reference images (arr_0)"},
             "cmmd": {"sigma": CMMD_SIGMA, "scale": CMMD_SCALE, "embeddings": "L2-normalised",
                      "estimator": "biased MMD² (google-research cmmd distance.mmd), float64"}}
    for metric, rule in rules.items():
        if metric in metrics or (metric == "prdc" and set(PRDC_METRICS) & set(metrics)):
            block[metric] = rule
    if isinstance(extractor, str):
        block["status"] = extractor
    return block


def _extractor_reference_statistics(ref: Reference, name: str) -> str:
    if not ref.has_stats(f"fd_{name}"):
        return "from the reference's images"
    stored = f"EDM2 fd_{name}" if ref.kind == "edm2-statistics" else f"mu_{name}/sigma_{name}"
    return f"from the file ({stored})"


# How a Fréchet distance's statistics of a set are made (features.FeatureSet.moments).
_STATISTICS_RULE = ("more images than feature dimensions: streamed float64 sums n, Σx, Σxxᵀ (compensated, EDM2's "
                    "scheme); otherwise ADM's np.mean (float32) and np.cov of the features")


def _frechet(features: FeatureSet, layer: str, mu_ref, sigma_ref, route: str) -> float:
    """FD of one layer of a feature set to reference statistics: from the statistics streamed during extraction
    when the set has more images than dimensions (the features are never loaded), else from its rows (ADM's
    statistics, or the "gram" route, which needs them)."""
    if layer in features.statistics:
        return frechet_distance(*features.moments(layer), mu_ref, sigma_ref, route=route)
    return frechet_distance_of_features(features.arrays[layer], mu_ref, sigma_ref, route=route)


class _Timings(dict):
    """Seconds per step: `with timings("fd"): ...`."""

    @contextlib.contextmanager
    def __call__(self, step: str):
        clock = time.perf_counter()
        yield
        self[step] = round(time.perf_counter() - clock, 3)


def _run_extractors(plan: Plan, progress: bool) -> tuple[dict, dict]:
    """(values, extra) of the extra extractors: each one's metrics (EXTRA_METRICS) on its features."""
    values, extra = {}, {}
    for name, extractor in plan.extractors.items():
        wanted = {metric: value for metric, value in metric_names(name).items() if value not in plan.unavailable}
        if not wanted:
            continue
        layout, lazy = extractor.layout(), extractor.lazy(plan.device)
        timings = _Timings()
        with timings("features_samples"):
            smp = extract(plan.samples, layout, lazy, cache=plan.cache, batch_size=plan.batch_size,
                          progress=progress, label="samples")
        stored = plan.reference.load_stats(f"fd_{name}")
        ref = None
        if stored is None or set(wanted) & set(RAW_FEATURE_METRICS):
            with timings("features_reference"):
                ref = extract(plan.reference.images, layout, lazy, cache=plan.cache, batch_size=plan.batch_size,
                              progress=progress, label="reference")
        mu_ref, sigma_ref = stored or ref.moments(LAYER)
        out = {}
        if "fd" in wanted:
            with timings("fd"):
                values[wanted["fd"]] = _frechet(smp, LAYER, mu_ref, sigma_ref, plan.frechet)
        if "fd_infinity" in wanted:
            with timings("fd_infinity"):
                out["fd_infinity"] = fd_infinity(smp.arrays[LAYER], mu_ref, sigma_ref, route=plan.frechet)
            values[wanted["fd_infinity"]] = out["fd_infinity"]["fd_infinity"]
        if "kid" in wanted:
            with timings("kid"):
                kid = kernel_inception_distance(smp.arrays[LAYER], ref.arrays[LAYER])
            values[wanted["kid"]], values[f"{wanted['kid']}_std"] = kid["kid"], kid["kid_std"]
        if set(wanted) & set(PRDC_METRICS):
            with timings("prdc"):
                found = prdc(ref.arrays[LAYER], smp.arrays[LAYER], device=plan.device)
            values.update({wanted[metric]: found[metric] for metric in PRDC_METRICS if metric in wanted})
        if "cmmd" in wanted:
            with timings("cmmd"):
                values[wanted["cmmd"]] = cmmd(ref.arrays[LAYER], smp.arrays[LAYER], device=plan.device)
        extra[name] = {**out, "cache": {"samples_features": "hit" if smp.cache_hit else "miss",
                                        "reference_features": None if ref is None else
                                        "hit" if ref.cache_hit else "miss"},
                       "feature_extraction": {"samples": smp.meta, "reference": ref.meta if ref else None},
                       "timings_s": dict(timings)}
    return values, extra


def _run_adm(plan: Plan, progress: bool) -> tuple[dict, dict]:
    """(values, extra) of the ADM backend."""
    want = set(plan.computed)
    ref, memo, weights = plan.reference, plan.cache.memo, plan.weights
    file_stats = {"fid": "mu" in ref.stat_keys, "sfid": "mu_s" in ref.stat_keys}
    need_ref = bool(want & {"precision", "recall", "kid"}) or any(m in want and not file_stats[m] for m in file_stats)
    sample_key = feature_key(plan.samples.content_hash(memo), weights)
    ref_key = feature_key(ref.images.content_hash(memo), weights) if need_ref else None
    memo_key = hashlib.sha256(json.dumps({
        "code": _code_digest(), "samples": sample_key, "reference": [ref.sha256, ref_key, list(ref.stat_keys)],
        "metrics": sorted(want), "frechet": plan.frechet, "is_split_rule": plan.is_split_rule,
        "uncertainty": [plan.bootstrap, plan.bootstrap_seed] if "fid" in want else None},
        sort_keys=True).encode()).hexdigest()
    cached = plan.cache.read_metrics(memo_key)
    if cached is not None:         # same samples, reference, metrics and code: the stored values
        extra = {**cached["extra"], "cache": {"samples_features": "not read", "reference_features": "not read",
                                              "metrics": "hit"}, "timings_s": {}}
        return cached["values"], extra

    timings = _Timings()
    lazy = LazyExtractor(weights, plan.device)
    with timings("features_samples"):
        smp = extract(plan.samples, weights, lazy, cache=plan.cache, batch_size=plan.batch_size, progress=progress,
                      label="samples")
    ref_feats = None
    if need_ref:
        with timings("features_reference"):
            ref_feats = extract(ref.images, weights, lazy, cache=plan.cache, batch_size=plan.batch_size,
                                progress=progress, label="reference")
    values, extra = {}, {}
    for metric, layer, stat in (("fid", "pool3", "fid"), ("sfid", "spatial", "sfid")):
        if metric in want:
            with timings(metric):
                mu2, sigma2 = ref.load_stats(stat) or ref_feats.moments(layer)
                values[metric] = _frechet(smp, layer, mu2, sigma2, plan.frechet)
            if metric == "fid":
                extra.update(_fid_uncertainty(plan, smp, mu2, sigma2, values["fid"], timings),
                             fid_uncertainty=_uncertainty_card(plan))
    if "is" in want:
        with timings("is"):
            values["is"], extra["is_split_scores"], extra["is_splits"] = inception_score(smp.logits,
                                                                                       plan.is_split_rule)
    if want & {"precision", "recall"}:
        with timings("precision_recall"):
            fp16 = precision_recall(ref_feats.pool3, smp.pool3, fp16=True, device=plan.device)
            fp32 = precision_recall(ref_feats.pool3, smp.pool3, fp16=False, device=plan.device)
        for metric in ("precision", "recall"):
            if metric in want:
                values[metric] = fp16[metric]
        extra["precision_recall"] = {
            "fp16_emulated": fp16, "fp32": fp32,
            "fp16_changes_result": (fp16["precision"], fp16["recall"]) != (fp32["precision"], fp32["recall"])}
    if "kid" in want:
        with timings("kid"):
            kid = kernel_inception_distance(smp.pool3, ref_feats.pool3)
        values["kid"], values["kid_std"] = kid["kid"], kid["kid_std"]
    extra["cache"] = {"samples_features": "hit" if smp.cache_hit else "miss",
                      "reference_features": None if ref_feats is None else "hit" if ref_feats.cache_hit else "miss",
                      "metrics": "miss"}
    extra["feature_extraction"] = {"samples": smp.meta, "reference": ref_feats.meta if ref_feats else None}
    extra["timings_s"] = dict(timings)
    plan.cache.write_metrics(memo_key, {"values": values, "extra": extra})
    return values, extra


def _fid_uncertainty(plan: Plan, features: FeatureSet, mu_ref, sigma_ref, fid: float, timings: _Timings) -> dict:
    """extra.fid_bootstrap (when the plan runs one) and extra.fid_vs_n of the samples' pool3, timed."""
    out = {}
    if plan.bootstrap:
        with timings("fid_bootstrap"):
            out["fid_bootstrap"] = bootstrap_fid(features.pool3, mu_ref, sigma_ref, resamples=plan.bootstrap,
                                                 seed=plan.bootstrap_seed)
    with timings("fid_vs_n"):
        out["fid_vs_n"] = fid_vs_n(features.pool3, mu_ref, sigma_ref, seed=plan.bootstrap_seed, full_fid=fid)
    return out


# The samples.json `pixeldit-bench sample` writes: v2 since the shard engine (pixeldit.sample.SAMPLES_SCHEMA),
# v1 before it; both keep settings, sampler_config and network in the same places.
SAMPLES_SIDECAR_SCHEMAS = ("pixeldit-bench/samples/v1", "pixeldit-bench/samples/v2")


def sampler_and_model(samples) -> tuple[dict, dict]:
    """(sampler, model) sections from the sampler's sidecar `<samples>.json`, empty when there is none."""
    if not isinstance(samples, (str, Path)) or Path(samples).suffix.lower() != ".npz":
        return {}, {}
    try:
        sidecar = json.loads(Path(samples).with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}, {}
    if not isinstance(sidecar, dict) or sidecar.get("schema") not in SAMPLES_SIDECAR_SCHEMAS:
        return {}, {}
    settings, network = sidecar.get("settings") or {}, sidecar.get("network") or {}
    sampler = {"name": settings.get("sampler"), **(sidecar.get("sampler_config") or {}),
               **{key: settings.get(key) for key in ("seed", "quantization", "precision", "labels")},
               **({"first_index": settings["first_index"]} if settings.get("first_index") else {})}
    model = {"network_sha256": settings.get("network_sha256"), "network": network.get("path"),
             "weights": network.get("weights"), "config": network.get("config"),
             **(network.get("summary") or {})}     # name, type, params, gflops, training and sampling compute
    return sampler, model


def evaluate_imagenet(samples, reference, *, backend: str = "adm", metrics=None, batch_size: int | None = None,
                      device=None, cache_dir=None, weights: str = "auto", expected_samples: int | None = None,
                      progress: bool = False, run: dict | None = None, model: dict | None = None,
                      sampler: dict | None = None, frechet: str = DEFAULT_FRECHET_ROUTE,
                      is_split_rule: str = DEFAULT_IS_SPLIT_RULE, bootstrap: int | None = None,
                      bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED, features=None) -> dict:
    """Score `samples` against `reference`; returns a result record (`pixeldit.infra.results.make_result`).

    samples: ADM `.npz` (`arr_0` uint8 NHWC), `.npy`, a folder of PNG/JPEG, a prepared dataset or a uint8
    N×H×W×3 array. reference: ADM reference batch / `build_reference` output `.npz`, or any image set.
    metrics: subset of ("fid", "sfid", "is", "precision", "recall", "kid"); default all.
    features: feature extractors (`extractors.EXTRACTORS`), default ("inception",) = ADM's suite alone; each extra
    one adds fd_<name>, density_<name>, coverage_<name> after the Inception values (adm backend only).
    weights: "auto" (full torch-fidelity file if installed, else the offline conversion), "inception", "offline".
    cache_dir: cache root (default `$PIXELDIT_CACHE/imagenet`); False disables caching.
    run / model / sampler: sections of the result record; model and sampler default to what the sampler's
    sidecar `<samples>.json` (pixeldit-bench/samples/v1 or v2) records.
    bootstrap / bootstrap_seed: FID bootstrap resamples (None: the default where cheap, 0: none) and its seed.
    """
    started = time.perf_counter()
    plan = plan_imagenet(samples, reference, backend=backend, metrics=metrics, batch_size=batch_size, device=device,
                         cache_dir=cache_dir, weights=weights, expected_samples=expected_samples, frechet=frechet,
                         is_split_rule=is_split_rule, bootstrap=bootstrap, bootstrap_seed=bootstrap_seed,
                         features=features)
    if plan.backend == "adm":
        values, extra = _run_adm(plan, progress)
        unavailable, protocol = {}, _protocol(plan)
        if plan.extractors:
            extra_values, extra["extractors"] = _run_extractors(plan, progress)
            values = {**values, **extra_values}
    else:
        values, unavailable, extra, protocol = run_backend(plan, progress)
    unavailable = {**plan.unavailable, **unavailable}
    ordered = {}
    for metric in plan.metrics:
        ordered[metric] = values.get(metric)
        if metric == "kid":
            ordered["kid_std"] = values.get("kid_std")
            if "kid" in unavailable:
                unavailable["kid_std"] = unavailable["kid"]
    for metric in plan.extra_metrics:
        ordered[metric] = values.get(metric)
    extra = {**extra, "device": str(plan.device), "batch_size": plan.batch_size,
             "reference_path": str(plan.reference.path) if plan.reference.path else None,
             "seconds": round(time.perf_counter() - started, 3)}
    sample_record = {"path": str(plan.samples.path) if plan.samples.path else None, "kind": plan.samples.kind,
                     "sha256": plan.samples.content_hash(plan.cache.memo),
                     "file_sha256": plan.samples.file_sha256(plan.cache.memo), "count": len(plan.samples),
                     "resolution": list(plan.samples.resolution)}
    sidecar_sampler, sidecar_model = sampler_and_model(samples)
    return make_result("imagenet", VERSION, ordered, protocol, backend=plan.backend, unavailable=unavailable,
                       samples=sample_record, model=model or sidecar_model, sampler=sampler or sidecar_sampler,
                       run=run, extra=extra)
