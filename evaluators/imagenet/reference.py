"""Reference sets: ADM's reference batches, and the builder that writes files in the same format.

ADM's `VIRTUAL_imagenet256_labeled.npz` holds `arr_0` (10,000 uint8 images, for precision/recall) and
`mu`, `sigma`, `mu_s`, `sigma_s` (statistics over the whole dataset). When `mu` is present its statistics
are used for FID/sFID (as ADM does); `arr_0` serves precision/recall and KID. Files with only
`mu`/`sigma` (e.g. `adm_in256_stats.npz`) give FID alone; files with only `arr_0` give statistics from
their images.

Files written by `build_reference` carry the same keys plus `protocol_card` (JSON: resolution, extractor,
weight digests, counts, source) and `checksum` (sha256 over every other member's bytes, verified on
open). ADM's own evaluator reads them unchanged.

EDM2's reference pickles (`img512.pkl`: {"num_images", "fid": {"mu", "sigma"}, "fd_dinov2": {"mu", "sigma"}})
are read without running code from the file (`pixeldit.infra.safe_pickle`): their FID statistics play the part
of ADM's `mu`/`sigma` (a statistics-only reference) and `load_stats("fd_dinov2")` hands on the DINOv2 ones.
A file built with extra extractors (`build_reference(..., features=("inception", "dinov2"))`) stores theirs as
`mu_<name>`/`sigma_<name>`, read the same way (`load_stats("fd_<name>")`), with each extractor's card.

A reference named by its registry entry (`reference_registry`), or a file named like an entry's file, is
checked against that entry when it is opened.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluators.imagenet.errors import InputError, ReferenceMismatchError
from evaluators.imagenet.extractors import LAYER, ResolvedExtractor, normalise_features, resolve_extractor
from evaluators.imagenet.features import Cache, FeatureSet, LazyExtractor, default_batch_size, extract
from evaluators.imagenet.inception import EXTRACTOR_NAME, InceptionWeights, resolve_weights
from evaluators.imagenet.reference_registry import (
    REFERENCES,
    ReferenceEntry,
    check_file,
    entry_for_filename,
    get_reference_entry,
)
from evaluators.imagenet.sources import HashMemo, ImageSource, NpzSource, file_sha256, file_stamp, open_images
from pixeldit.infra.devices import resolve_device
from pixeldit.infra.files import sha256_file, temp_beside
from pixeldit.infra.safe_pickle import UnsafePickleError, load_array_pickle
from pixeldit.infra.weights import MissingWeightsError

CARD_SCHEMA = "pixeldit-bench/imagenet-reference/v1"
STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
STAT_SHAPES = {"mu": (2048,), "sigma": (2048, 2048), "mu_s": (2023,), "sigma_s": (2023, 2023)}
# Which arrays of an ADM-format file each metric reads, and the feature size of each metric in an EDM2 pickle.
ADM_STATS = {"fid": ("mu", "sigma"), "sfid": ("mu_s", "sigma_s")}
EDM2_DIMS = {"fid": 2048, "fd_dinov2": 1024}
DEFAULT_PR_IMAGES = 10000
BUILD_HINT = "build one with `pixeldit-bench eval imagenet ref build DATASET --res RES --out FILE`"


def _members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"reference {path} is not a readable .npz file ({error}): truncated or corrupt; "
                         f"download it again or {BUILD_HINT}") from None


def npz_checksum(path: Path, memo: HashMemo | None = None) -> str:
    """sha256 over (name, sha256 of bytes) of every member but `checksum.npy`, in name order."""
    stamp = {"kind": "reference-checksum", **file_stamp(path)}
    hit = memo.get(stamp) if memo else None
    if hit:
        return hit["checksum"]
    outer = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if name == "checksum.npy":
                    continue
                inner = hashlib.sha256()
                with archive.open(name) as stream:
                    for block in iter(lambda: stream.read(1 << 20), b""):
                        inner.update(block)
                outer.update(f"{name}\n{inner.hexdigest()}\n".encode())
    except zipfile.BadZipFile as error:      # a changed byte inside a member fails the zip's own CRC first
        raise InputError(f"reference {path} is damaged ({error}); download or rebuild it") from None
    value = outer.hexdigest()
    if memo:
        memo.put(stamp, {"checksum": value})
    return value


@dataclass
class Reference:
    """A resolved reference: images for P/R/KID and/or statistics for FID/sFID, with its protocol card."""
    description: str
    path: Path | None
    kind: str                  # "adm-batch", "pixeldit-reference", "statistics-only", "edm2-statistics", "images"
    images: ImageSource | None           # arr_0 (or the folder / array / dataset itself)
    stat_keys: tuple[str, ...]           # statistics stored in the file (ADM names; an EDM2 pickle's fid = mu, sigma)
    card: dict | None
    sha256: str | None                   # of the .npz file, or the content hash of an image set
    registry: ReferenceEntry | None = None   # the registry entry the file was checked against
    verified: str | None = None              # how it was checked against that entry
    num_images: int | None = None            # images behind an EDM2 pickle's statistics
    extractor_stats: tuple[str, ...] = ()    # extra extractors whose statistics the file stores (fd_<name>)

    @property
    def resolution(self) -> tuple[int, int] | None:
        if self.card:
            return tuple(self.card["resolution"])
        if self.images is not None:
            return tuple(self.images.resolution)
        return (self.registry.resolution,) * 2 if self.registry else None

    @property
    def stats_count(self) -> int | None:
        if self.card:
            return self.card["stats_count"]
        if self.kind == "edm2-statistics":
            return self.num_images
        return None if self.stat_keys else (len(self.images) if self.images is not None else None)

    def load_stats(self, which: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(mu, sigma) stored in the file for "fid", "sfid" or "fd_<extractor>" (e.g. "fd_dinov2"); None when the
        file has none."""
        if self.kind == "edm2-statistics":
            stats = _edm2_statistics(self.path).get(which)
            return None if stats is None else (stats["mu"], stats["sigma"])
        keys = self._stored_keys(which)
        if keys is None:
            return None
        with np.load(self.path) as data:
            mu, sigma = (np.asarray(data[key]) for key in keys)
        dim = STAT_SHAPES[keys[0]][0] if keys[0] in STAT_SHAPES else len(mu)
        for key, value, shape in zip(keys, (mu, sigma), ((dim,), (dim, dim))):
            if value.shape != shape or not np.isfinite(value).all():
                raise InputError(f"reference {self.path} [{key}] has shape {value.shape} (expected "
                                 f"{shape}) or non-finite values; {BUILD_HINT}")
        return mu, sigma

    def has_stats(self, which: str) -> bool:
        """Whether `load_stats(which)` finds statistics (without loading them)."""
        if self.kind == "edm2-statistics":
            return which in EDM2_DIMS and (which == "fid" or which in _edm2_statistics(self.path))
        return self._stored_keys(which) is not None

    def _stored_keys(self, which: str) -> tuple[str, str] | None:
        """The (mu, sigma) array names of an ADM-format file for `which`; None when the file has none."""
        if which.startswith("fd_") and which[3:] in self.extractor_stats:
            return f"mu_{which[3:]}", f"sigma_{which[3:]}"
        keys = ADM_STATS.get(which)
        return keys if keys is not None and set(keys) <= set(self.stat_keys) else None


def _edm2_statistics(path: Path) -> dict:
    """An EDM2 reference pickle, read without running its code and checked: {metric: {"mu", "sigma"}, ...}."""
    try:
        data = load_array_pickle(path)
    except UnsafePickleError as error:
        raise InputError(f"reference {path} is refused: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise InputError(f"reference {path} is not a readable pickle ({error}): truncated or corrupt; "
                         f"download it again") from None
    if not isinstance(data, dict) or "fid" not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"reference {path} is not an EDM2 reference pickle: expected a dict with 'fid' "
                         f"(and 'fd_dinov2', 'num_images'), found {found}")
    for metric, dim in EDM2_DIMS.items():
        stats = data.get(metric)
        if stats is None and metric != "fid":
            continue
        stats = stats if isinstance(stats, dict) else {}
        shapes = {key: getattr(stats.get(key), "shape", None) for key in ("mu", "sigma")}
        if shapes != {"mu": (dim,), "sigma": (dim, dim)} or not all(np.isfinite(stats[key]).all() for key in shapes):
            raise InputError(f"reference {path} [{metric}] has mu/sigma shapes {shapes} (expected ({dim},) and "
                             f"({dim}, {dim})) or non-finite values")
    return data


def _resolve_name(reference, name: str | None):
    """(what to open, the registry entry it must match): an explicit name, a registry name, an entry's file name."""
    if name is not None:
        entry = get_reference_entry(name)
        return (entry.location if reference is None else reference), entry
    if isinstance(reference, str) and reference in REFERENCES and not Path(reference).exists():
        entry = REFERENCES[reference]
        return entry.location, entry
    if isinstance(reference, (str, os.PathLike)):
        return reference, entry_for_filename(Path(reference))
    return reference, None


def open_reference(reference, memo: HashMemo | None = None, name: str | None = None) -> Reference:
    """Open an ADM/pixeldit reference `.npz`, an EDM2 reference `.pkl`, a registry name, or any image set.

    `name` (or a `reference` that is a registry name, or a file named like an entry's file) makes the file
    answer to that registry entry: a pinned sha256 or protocol card that differs raises ReferenceChecksumError
    naming both; `reference=None` with a `name` opens the entry's file where the registry keeps it.
    """
    if isinstance(reference, Reference):
        return reference
    reference, entry = _resolve_name(reference, name)
    if entry is not None and not Path(reference).is_file():
        message = f"reference {entry.name!r} is not at {reference}; {entry.obtain_hint()}"
        raise MissingWeightsError(message) if entry.url else InputError(message)
    opened = _open_file(reference, memo)
    if entry is not None:
        opened.registry = entry
        opened.verified = check_file(entry, opened.path, file_sha256(opened.path, memo), opened.card)
    return opened


def _open_file(reference, memo: HashMemo | None) -> Reference:
    suffix = Path(reference).suffix.lower() if isinstance(reference, (str, os.PathLike)) else None
    if suffix == ".pkl":
        path = Path(reference)
        if not path.is_file():
            raise InputError(f"reference {path} does not exist; EDM2's reference pickles are in the registry "
                             f"(`pixeldit-bench ref list`, `pixeldit-bench ref fetch edm2-img512`)")
        data = _edm2_statistics(path)
        extractor_stats = tuple(metric[3:] for metric in EDM2_DIMS if metric.startswith("fd_") and metric in data)
        return Reference(str(path), path, "edm2-statistics", None, ("mu", "sigma"), None, file_sha256(path, memo),
                         num_images=data.get("num_images"), extractor_stats=extractor_stats)
    if suffix != ".npz":
        images = open_images(reference, name="reference")
        return Reference(images.describe(), images.path, "images", images, (), None, images.content_hash(memo))
    path = Path(reference)
    if not path.is_file():
        raise InputError(f"reference {path} does not exist; download ADM's batch (e.g. "
                         f"VIRTUAL_imagenet256_labeled.npz) or {BUILD_HINT}")
    names = {name[:-4] for name in _members(path) if name.endswith(".npy")}
    images = NpzSource(path) if "arr_0" in names else None
    stat_keys = tuple(key for key in STAT_KEYS if key in names)
    if images is None and "mu" not in stat_keys:
        raise InputError(f"reference {path} has neither images (arr_0) nor statistics (mu, sigma); it has "
                         f"{sorted(names)}; {BUILD_HINT}")
    if ("mu" in stat_keys) != ("sigma" in stat_keys) or ("mu_s" in stat_keys) != ("sigma_s" in stat_keys):
        raise InputError(f"reference {path} has {list(stat_keys)}: statistics come in pairs (mu+sigma, mu_s+sigma_s); "
                         f"{BUILD_HINT}")
    card = None
    if "protocol_card" in names:
        with np.load(path) as data:
            card = json.loads(str(data["protocol_card"]))
            stored = str(data["checksum"]) if "checksum" in names else None
        actual = npz_checksum(path, memo)
        if stored != actual:
            raise InputError(f"reference {path} fails its checksum (stored {stored}, computed {actual}): the file "
                             f"was modified or damaged; rebuild it ({card.get('build_command') or BUILD_HINT})")
        if images is not None and (len(images) != card["images_count"] or
                                   list(images.resolution) != list(card["resolution"])):
            raise ReferenceMismatchError(
                f"reference {path}: its protocol card promises {card['images_count']} images at "
                f"{card['resolution']}, its arr_0 holds {len(images)} at {list(images.resolution)}; rebuild it")
    kind = "pixeldit-reference" if card else "adm-batch" if images is not None else "statistics-only"
    extractor_stats = tuple(sorted(name[3:] for name in names if name.startswith("mu_") and name not in STAT_KEYS
                                   and f"sigma_{name[3:]}" in names))
    return Reference(str(path), path, kind, images, stat_keys, card, file_sha256(path, memo),
                     extractor_stats=extractor_stats)


def check_compatible(reference: Reference, samples: ImageSource, weights: InceptionWeights,
                     expected_samples: int | None = None) -> None:
    """Errors (naming both sides) for resolution, extractor and sample-count mismatches."""
    if expected_samples is not None and len(samples) != expected_samples:
        raise ReferenceMismatchError(f"samples {samples.describe()} hold {len(samples)} images, the protocol asks "
                                     f"for {expected_samples}; sample the missing images or change expected_samples")
    ref_res = reference.resolution
    if ref_res is not None and tuple(samples.resolution) != tuple(ref_res):
        raise ReferenceMismatchError(
            f"samples {samples.describe()} are {samples.resolution[0]}×{samples.resolution[1]} but reference "
            f"{reference.description} is {ref_res[0]}×{ref_res[1]}; sample at {ref_res[0]}×{ref_res[1]} or "
            f"build a reference at {samples.resolution[0]} with `pixeldit-bench eval imagenet ref build DATASET "
            f"--res {samples.resolution[0]} --out FILE`")
    card = reference.card
    if card and card.get("features_sha256") != weights.features_sha256:
        raise ReferenceMismatchError(
            f"reference {reference.description} was built with Inception weights {card.get('weights')} "
            f"(feature digest {card.get('features_sha256')}), this run uses {weights.name} (feature digest "
            f"{weights.features_sha256}); rebuild the reference with these weights or install the ones it names")


def check_extractor_compatible(reference: Reference, extractor: ResolvedExtractor) -> None:
    """A file's mu_<name>/sigma_<name> must come from the extractor this run uses (same weights, same network)."""
    built = ((reference.card or {}).get("extractors") or {}).get(extractor.entry.name)
    if built is None or extractor.entry.name not in reference.extractor_stats:
        return
    ours = extractor.card()
    if built["weights_file"]["sha256"] != ours["weights_file"]["sha256"] or built.get("config") != ours.get("config"):
        raise ReferenceMismatchError(
            f"reference {reference.description} holds {extractor.entry.name} statistics from weights "
            f"{built['weights_file']['sha256']} (config {built.get('config')}), this run uses "
            f"{ours['weights_file']['sha256']} (config {ours.get('config')}); rebuild the reference with `pixeldit-bench "
            f"ref build ... --features inception,{extractor.entry.name}` or install the weights it names")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_reference_npz(out: Path, images: ImageSource, image_count: int, stats: dict[str, np.ndarray],
                        card: dict, batch_size: int = 256) -> str:
    """Stream the first `image_count` images into `arr_0` and add statistics, card and checksum; atomic."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_beside(out)
    try:
        digests = {}
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            header = {"descr": "|u1", "fortran_order": False, "shape": (image_count, *images.resolution, 3)}
            inner = hashlib.sha256()
            with archive.open("arr_0.npy", "w", force_zip64=True) as member:
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(head, header)
                for chunk in _arr0_chunks(head.getvalue(), images, image_count, batch_size):
                    member.write(chunk)
                    inner.update(chunk)
            digests["arr_0.npy"] = inner.hexdigest()
            members = {f"{key}.npy": _npy_bytes(value) for key, value in stats.items()}
            members["protocol_card.npy"] = _npy_bytes(np.array(json.dumps(card, sort_keys=True)))
            for name, data in members.items():
                archive.writestr(name, data)
                digests[name] = hashlib.sha256(data).hexdigest()
            outer = hashlib.sha256()
            for name in sorted(digests):
                outer.update(f"{name}\n{digests[name]}\n".encode())
            checksum = outer.hexdigest()
            archive.writestr("checksum.npy", _npy_bytes(np.array(checksum)))
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return checksum


def _arr0_chunks(header: bytes, images: ImageSource, image_count: int, batch_size: int):
    yield header
    written = 0
    for batch in images.batches(batch_size):
        take = min(len(batch), image_count - written)
        yield np.ascontiguousarray(batch[:take]).tobytes()
        written += take
        if written == image_count:
            return


def build_card(images: ImageSource, weights: InceptionWeights, stats_count: int, images_count: int,
               content_hash: str, build_command: str | None, extractors: dict | None = None) -> dict:
    return {"schema": CARD_SCHEMA, "resolution": list(images.resolution), "extractor": EXTRACTOR_NAME,
            **weights.card(), **({"extractors": extractors} if extractors else {}),
            "stats_count": stats_count, "images_count": images_count,
            "images": "the first images_count images of the source, in order",
            "source": images.describe(), "source_kind": images.kind, "source_content_sha256": content_hash,
            "transform": images.transform, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "build_command": build_command}


def reference_summary(reference: Reference) -> dict:
    """The reference part of a protocol card."""
    if reference.kind == "edm2-statistics":
        statistics = "from the file (EDM2 fid mu/sigma)"
        extractor = "EDM2's Inception-v3 2015-12-05 (StyleGAN3 metrics port; assumed equal to this network)"
    else:
        statistics = "from the file (mu/sigma/mu_s/sigma_s)" if reference.stat_keys else "from its images"
        extractor = (reference.card or {}).get("weights", "ADM TF graph (assumed equal to this network)"
                                               if reference.kind in ("adm-batch", "statistics-only") else None)
    return {"file": reference.path.name if reference.path else reference.description, "kind": reference.kind,
            "sha256": reference.sha256, "count": len(reference.images) if reference.images is not None else None,
            "stats_count": reference.stats_count,
            "resolution": list(reference.resolution) if reference.resolution else None,
            "statistics": statistics, "extractor": extractor,
            "registry": reference.registry.name if reference.registry else None,
            "registry_check": reference.verified}


def resolve_build_extractors(features) -> dict[str, ResolvedExtractor]:
    """The extra extractors a reference is built with; their weights must be present (a reference built without
    the statistics it was asked for would be silently incomplete)."""
    resolved = {}
    for name in normalise_features(features)[1:]:
        extractor = resolve_extractor(name)
        if isinstance(extractor, str):
            raise MissingWeightsError(f"cannot build {name} statistics: {extractor.removeprefix('unavailable: ')}")
        resolved[name] = extractor
    return resolved


def build_reference(images, out, res: int | None = None, *, split: str | None = None,
                    pr_images: int = DEFAULT_PR_IMAGES, batch_size: int | None = None, device=None,
                    cache_dir=None, weights: str = "auto", overwrite: bool = False, progress: bool = False,
                    build_command: str | None = None, features=None) -> dict:
    """Write an ADM-format reference `.npz` from a prepared dataset, a folder, an `.npz`/`.npy` or an array.

    Statistics (mu, sigma, mu_s, sigma_s; mu_<name>, sigma_<name> of every extra extractor in `features`) cover
    every image; `arr_0` keeps the first `pr_images` (ADM's batches keep 10,000) for precision/recall and KID.
    `res` centre-crops a folder of raw images the ADM way; any other input must already be `res`×`res`.
    Returns {"path", "sha256", "checksum", "card"}.
    """
    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise InputError(f"--out {out} must end in .npz (ADM's reference format)")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it")
    source = open_images(images, name="dataset", crop_to=res, split=split)
    if res is not None and tuple(source.resolution) != (res, res):
        raise ReferenceMismatchError(
            f"{source.describe()} holds {source.resolution[0]}×{source.resolution[1]} images but --res asks for "
            f"{res}×{res}; only folders of raw images are centre-cropped, prepare the dataset at {res} "
            f"(`pixeldit-bench data prepare SRC --out DIR --res {res}`)")
    if pr_images < 1:
        raise InputError(f"pr_images must be positive, got {pr_images}")
    extractors = resolve_build_extractors(features)
    cache = Cache(cache_dir)
    chosen = resolve_weights(weights, cache.memo)
    device = resolve_device(device)
    batch_size = batch_size or default_batch_size(device)
    passes = {"inception": (chosen, LazyExtractor(chosen, device)),
              **{name: (extractor.layout(), extractor.lazy(device)) for name, extractor in extractors.items()}}
    found = {name: extract(source, layout, lazy, cache=cache, batch_size=batch_size, progress=progress,
                           label="reference") for name, (layout, lazy) in passes.items()}
    stats = {}
    stats["mu"], stats["sigma"] = found["inception"].moments("pool3")
    stats["mu_s"], stats["sigma_s"] = found["inception"].moments("spatial")
    for name in extractors:
        stats[f"mu_{name}"], stats[f"sigma_{name}"] = found[name].moments(LAYER)
    count = min(pr_images, len(source))
    card = build_card(source, chosen, len(source), count, source.content_hash(cache.memo), build_command,
                      {name: extractor.card() for name, extractor in extractors.items()})
    checksum = write_reference_npz(out, source, count, stats, card)
    if cache.root is not None:
        # arr_0 holds the first `count` images, whose features were just computed: file them under the new
        # file's content key too, so evaluations against it skip the reference's feature passes.
        written = open_images(out, name="reference")
        for name, (layout, _) in passes.items():
            extract(written, layout, lambda features=found[name]: FeatureReplay(features, count, device),
                    cache=cache, batch_size=batch_size)
    return {"path": str(out), "sha256": sha256_file(out), "checksum": checksum, "card": card}


class FeatureReplay:
    """An extractor that hands back features already computed for the same images, in their order."""

    def __init__(self, features: FeatureSet, count: int, device):
        self.device = device
        self.arrays = {name: array[:count] for name, array in features.arrays.items()}
        self.offset = 0

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = slice(self.offset, self.offset + len(images))
        self.offset = batch.stop
        return {name: np.asarray(array[batch]) for name, array in self.arrays.items()}
