"""One Inception pass per image set, streamed, batched, cached on disk.

Cache layout under the cache root (default `$PIXELDIT_CACHE/imagenet`, else `~/.cache/pixeldit-bench/imagenet`)::

    features/<key>/pool3.npy     N×2048 float32
    features/<key>/spatial.npy   N×2023 float32 (mixed_6/conv, NHWC, 7 channels)
    features/<key>/logits.npy    N×1008 float32 (only with the full weights)
    features/<key>/features.npy  N×dim float32 of another extractor (extractors.py, e.g. DINOv2), instead of the above
    features/<key>/<layer>.stats.npy  (1 + dim + dim²) float64 streamed sums n, Σx, Σxxᵀ (statistics.py) of each
                                 statistics layer (pool3, spatial, features) that has more images than dimensions
    features/<key>/meta.json     count, resolution, weights card, device, timing, sha256 of each .npy (written last)
    hashes/<stamp>.json          memoised sha256 of files by (path, size, mtime, inode)
    metrics/<key>.json           memoised metric values of one (samples, reference, settings, code) tuple + sha256

Every read checks the sha256 recorded at write time: a damaged or edited entry is discarded with a warning
and recomputed, never used.

`key` = sha256(content hash of the images, feature-network digest, classifier digest, format version); for
another extractor its `Layout.identity` (name, weights sha256, resize, normalisation, layer, config) replaces
the two digests. An
entry is written into a hidden `.partial` directory and renamed into place when complete, so a killed
run never leaves a half entry. Images are read in batches on a background thread while the network
runs; features go straight into memory-mapped `.npy` files, never a list of arrays.

The Fréchet distance of a set with more images than feature dimensions uses statistics summed batch by batch
during the pass (`FeatureSet.moments`), so it never loads the features: with n > d (ImageNet's 50,000 samples)
the pass keeps compensated float64 sums per statistics layer, which the cache stores beside the features.
With n <= d (the embedded default's 200) the features themselves are at most d rows and ADM's np.mean/np.cov
of them is used (and the "gram" route needs the rows anyway).

Under torchrun each rank extracts a contiguous run of whole batches (the batches one process would run,
so the features are the same bits), the shares are gathered to every rank, and rank 0 alone writes the
cache entry and the metric memo. The ranks' statistics are gathered and added in rank order, which gives
one process's float64 values (statistics.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from evaluators.imagenet.errors import ImageNetEvalError, InputError
from evaluators.imagenet.inception import InceptionFeatures, InceptionWeights
from evaluators.imagenet.metrics import fid_statistics
from evaluators.imagenet.sources import HashMemo, ImageSource
from evaluators.imagenet.statistics import FeatureStatistics
from pixeldit.infra.devices import all_ranks_agree, batch_aligned_share, current_world, gather_rows
from pixeldit.infra.files import sha256_file, temp_beside, write_json_atomic
from pixeldit.infra.progress import Progress

# v2: channels-last extraction on CPU; v3: sha256 per array; v4: ONNX Runtime on CPU; v5: streamed statistics of
# sets with n > d
FORMAT = "pixeldit-bench/imagenet-features/v5"
DIMS = {"pool3": 2048, "spatial": 2023, "logits": 1008}


def default_cache_root() -> Path:
    root = os.environ.get("PIXELDIT_CACHE") or Path.home() / ".cache" / "pixeldit-bench"
    return Path(root) / "imagenet"


def default_batch_size(device: torch.device) -> int:
    """ADM's 64 on CPU; larger on GPU, where the network is the bottleneck."""
    return 250 if device.type == "cuda" else 64


class Cache:
    """The cache root; `Cache(False)` keeps nothing (features in memory, no memo)."""

    def __init__(self, root: str | os.PathLike | None | bool = None):
        if root is False:
            self.root = None
        elif root is None or root is True:
            self.root = default_cache_root()
        else:
            self.root = Path(root)
        self.memo = HashMemo(self.root / "hashes" if self.root else None)

    def feature_dir(self, key: str) -> Path | None:
        return self.root / "features" / key if self.root else None

    def metrics_path(self, key: str) -> Path | None:
        return self.root / "metrics" / f"{key}.json" if self.root else None

    def read_metrics(self, key: str) -> dict | None:
        path = self.metrics_path(key)
        if path is None or not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
            payload = {"values": stored["values"], "extra": stored["extra"]}
            intact = stored["sha256"] == _payload_sha256(payload)
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            intact = False
        if not intact:
            _discard(path, "memoised metric values", "it is recomputed")
            return None
        return payload

    def write_metrics(self, key: str, payload: dict) -> None:
        path = self.metrics_path(key)
        if path is not None and current_world()[0] == 0:
            write_json_atomic(path, {**payload, "sha256": _payload_sha256(payload)})


def _payload_sha256(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _discard(path: Path, what: str, consequence: str) -> None:
    warnings.warn(f"{what} at {path} do not match the sha256 recorded when they were written (damaged or edited): "
                  f"discarded, {consequence}", stacklevel=3)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass
class FeatureSet:
    key: str
    count: int
    arrays: dict[str, np.ndarray]        # layer -> N×dim float32 (Inception: pool3, spatial, logits)
    cache_hit: bool
    seconds: float                       # extraction time of this call (0 on a hit)
    meta: dict = field(default_factory=dict)
    statistics: dict[str, FeatureStatistics] = field(default_factory=dict)   # layers with more images than dims

    def moments(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of a layer: from the sums streamed during extraction when the set has more images than
        dimensions (float64 mean), else ADM's `compute_statistics` of the rows (float32 mean, np.cov)."""
        if layer in self.statistics:
            return self.statistics[layer].mu(), self.statistics[layer].sigma()
        return fid_statistics(self.arrays[layer])

    @property
    def pool3(self) -> np.ndarray:       # N×2048
        return self.arrays["pool3"]

    @property
    def spatial(self) -> np.ndarray:     # N×2023
        return self.arrays["spatial"]

    @property
    def logits(self) -> np.ndarray | None:   # N×1008
        return self.arrays.get("logits")


@dataclass(frozen=True)
class Layout:
    """What one feature network writes into a cache entry and what identifies it.

    layers: name -> feature dimension, in file order; identity: what enters the cache key besides the images
    (network and weight digests, preprocessing); card: recorded in the entry's meta.json; title: progress label;
    statistics: the layers whose mean and covariance are streamed (those a Fréchet distance reads).
    """
    layers: dict
    identity: dict
    card: dict
    title: str
    statistics: tuple = ()

    def streamed(self, count: int) -> tuple[str, ...]:
        """The statistics layers whose moments come from the streamed sums for a set of `count` images."""
        return tuple(name for name in self.statistics if count > self.layers[name])


def inception_layout(weights: InceptionWeights) -> Layout:
    """The Inception entry: pool3, spatial and (with the full weights) logits; its key is the one of v3 entries."""
    names = ["pool3", "spatial"] + (["logits"] if weights.has_logits else [])
    return Layout({name: DIMS[name] for name in names},
                  {"features_sha256": weights.features_sha256,
                   "classifier": weights.tensor_sha256 if weights.has_logits else None},
                  weights.card(), "Inception features", statistics=("pool3", "spatial"))


def _layout(weights: InceptionWeights | Layout) -> Layout:
    return weights if isinstance(weights, Layout) else inception_layout(weights)


def feature_key(content_hash: str, weights: InceptionWeights | Layout) -> str:
    blob = {"format": FORMAT, "content": content_hash, **_layout(weights).identity}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def load_cached(directory: Path | None, key: str, weights: InceptionWeights | Layout) -> FeatureSet | None:
    """A complete cache entry, memory-mapped, whose files have the sha256 recorded when they were written;
    None when absent or damaged (a damaged one is removed, with a warning)."""
    if directory is None or not (directory / "meta.json").is_file():
        return None
    layout = _layout(weights)
    layers = layout.layers
    try:
        meta = json.loads((directory / "meta.json").read_text())
        files = [*layers, *(_stats_name(name) for name in layout.streamed(meta["count"]))]
        if any(sha256_file(directory / f"{name}.npy") != meta["sha256"][name] for name in files):
            raise ValueError("checksum mismatch")
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in layers}
        if any(arrays[name].shape != (meta["count"], dim) for name, dim in layers.items()):
            raise ValueError("shape mismatch")
        statistics = {name: FeatureStatistics.load(directory / f"{_stats_name(name)}.npy", layers[name])
                      for name in layout.streamed(meta["count"])}
        if any(stats.count != meta["count"] for stats in statistics.values()):
            raise ValueError("statistics of another count")
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, ImageNetEvalError):
        _discard(directory, "cached features", "they are extracted again")
        return None
    return FeatureSet(key, meta["count"], arrays, True, 0.0, meta, statistics)


def _stats_name(layer: str) -> str:
    return f"{layer}.stats"


def _prefetch(iterator: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """Run `iterator` on a background thread, `depth` batches ahead; its exceptions re-raise here."""
    slots: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterator:
                if stop.is_set():
                    return
                slots.put(item)
        except BaseException as error:         # noqa: BLE001 - handed to the consumer
            slots.put(error)
            return
        slots.put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():                # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def extract(source: ImageSource, weights: InceptionWeights | Layout, get_extractor: Callable[[], InceptionFeatures],
            *, cache: Cache, batch_size: int, progress: bool = False, label: str = "images") -> FeatureSet:
    """Features of `source` from the cache, or from one streamed pass that fills the cache.

    weights: the Inception weights, or the `Layout` of another feature network (its `get_extractor()` maps a
    uint8 N×H×W×3 batch to {layer: N×dim}, and has a `device`)."""
    layout = _layout(weights)
    key = feature_key(source.content_hash(cache.memo), layout)
    final = cache.feature_dir(key)
    hit = load_cached(final, key, layout)
    if all_ranks_agree(hit is not None):
        return hit
    count = len(source)
    dims = layout.layers
    names = list(dims)
    rank, world = current_world()
    shares = [batch_aligned_share(count, batch_size, other, world) for other in range(world)]
    start, stop = shares[rank]
    work = None
    if final is not None and rank == 0:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = temp_beside(final, directory=True)
        arrays = {name: np.lib.format.open_memmap(work / f"{name}.npy", mode="w+", dtype=np.float32,
                                                  shape=(count, dims[name])) for name in names}
    else:
        arrays = {name: np.empty((count, dims[name]), dtype=np.float32) for name in names}
    try:
        extractor = get_extractor()
        statistics = {name: FeatureStatistics(dims[name], extractor.device) for name in layout.streamed(count)}
        start_time = time.perf_counter()
        filled = start
        bar = Progress(stop - start, f"{layout.title} ({label})", enabled=progress and rank == 0)
        for batch in _prefetch(source.batches(batch_size, start, stop)):
            if batch.shape[1:3] != tuple(source.resolution) or filled + len(batch) > stop:
                raise InputError(f"{source.describe()} changed while it was read (batch {batch.shape} at image "
                                 f"{filled}); rerun once it is complete")
            out = extractor(batch)
            for name in names:
                arrays[name][filled:filled + len(batch)] = out[name]
            for name, stats in statistics.items():
                stats.update(out[name])
            filled += len(batch)
            bar.update(len(batch))
        bar.close()
        if filled != stop:
            raise InputError(f"{source.describe()} gave {filled - start} images of [{start}, {stop}), expected "
                             f"{stop - start}; is it being written?")
        if world > 1:
            for name in names:
                arrays[name][:] = gather_rows(arrays[name][start:stop], shares)   # N×D, rank order
            for stats in statistics.values():
                stats.gather_merge()
        seconds = time.perf_counter() - start_time
        meta = {"format": FORMAT, "key": key, "count": count, "resolution": list(source.resolution),
                "source": source.describe(), "weights": layout.card, "device": str(extractor.device),
                "batch_size": batch_size, "processes": world, "seconds": round(seconds, 3),
                "images_per_second": round(count / seconds, 3) if seconds else None,
                "statistics": {name: "streamed float64 sums (n > d)" for name in statistics}}
        if work is None:
            return FeatureSet(key, count, arrays, False, seconds, meta, statistics)
        for array in arrays.values():
            array.flush()
        del arrays
        for name, stats in statistics.items():
            stats.save(work / f"{_stats_name(name)}.npy")
        files = [*names, *(_stats_name(name) for name in statistics)]
        meta["sha256"] = {name: sha256_file(work / f"{name}.npy") for name in files}
        (work / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(work, final)
        except OSError:                          # another run finished the same entry first: keep theirs
            shutil.rmtree(work, ignore_errors=True)
        work = None
        loaded = load_cached(final, key, layout)
        loaded.cache_hit, loaded.seconds = False, seconds
        return loaded
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


class LazyExtractor:
    """Builds the Inception network on first use only (a full cache hit never loads it)."""

    def __init__(self, weights: InceptionWeights, device: torch.device):
        self.weights, self.device = weights, device
        self._extractor: InceptionFeatures | None = None

    def __call__(self) -> InceptionFeatures:
        if self._extractor is None:
            self._extractor = InceptionFeatures(self.weights, self.device)
        return self._extractor
