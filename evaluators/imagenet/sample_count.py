"""The FID a smaller sample count gives on the same samples, from the feature cache.

The subset is the first N of the seeded permutation that `extra.fid_vs_n` uses (`uncertainty.nested_subset`), so
at the sizes of that curve the value is the curve's point; the reference statistics are those the FID used (the
file's mu/sigma, else the statistics of its images). `pixeldit-bench compare --explain` measures a sample-count
difference with it.
"""
from __future__ import annotations

from evaluators.imagenet.evaluate import plan_imagenet
from evaluators.imagenet.features import LazyExtractor, extract
from evaluators.imagenet.uncertainty import DEFAULT_BOOTSTRAP_SEED, ResampledFrechet, fid_of_first_n


def fid_at_sample_count(samples, reference, size: int, *, seed: int = DEFAULT_BOOTSTRAP_SEED, weights: str = "auto",
                        device=None, cache_dir=None, batch_size: int | None = None) -> float:
    """FID of the first `size` samples of the seeded permutation of `samples` against `reference`; the pool3
    features come from the evaluator's cache (extracted once if absent)."""
    plan = plan_imagenet(samples, reference, metrics="fid", weights=weights, device=device, cache_dir=cache_dir,
                         batch_size=batch_size, bootstrap=0)
    extractor = LazyExtractor(plan.weights, plan.device)

    def features(images):
        return extract(images, plan.weights, extractor, cache=plan.cache, batch_size=plan.batch_size)

    # the evaluator's own reference statistics (FeatureSet.moments: streamed above 2,048 images)
    statistics = plan.reference.load_stats("fid") or features(plan.reference.images).moments("pool3")
    return fid_of_first_n(ResampledFrechet(features(plan.samples).pool3, *statistics), size, seed)
