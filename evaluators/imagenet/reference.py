"""Reference sets: ADM's reference batches, and the builder that writes files in the same format.

ADM's `VIRTUAL_imagenet256_labeled.npz` holds `arr_0` (10,000 uint8 images, for precision/recall) and
`mu`, `sigma`, `mu_s`, `sigma_s` (statistics over the whole dataset). When `mu` is present its statistics
are used for FID/sFID (as ADM does); `arr_0` serves precision/recall and KID. Files with only
`mu`/`sigma` (e.g. `adm_in256_stats.npz`) give FID alone; files with only `arr_0` give statistics from
their images.

Files written by `build_reference` carry the same keys plus `protocol_card` (JSON: resolution, extractor,
weight digests, counts, source) and `checksum` (sha256 over every other member's bytes, verified on
open). ADM's own evaluator reads them unchanged.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluators.imagenet.errors import InputError, ReferenceMismatchError
from evaluators.imagenet.features import Cache, LazyExtractor, default_batch_size, extract
from evaluators.imagenet.inception import EXTRACTOR_NAME, InceptionWeights, resolve_weights
from evaluators.imagenet.metrics import fid_statistics
from evaluators.imagenet.sources import HashMemo, ImageSource, NpzSource, file_sha256, file_stamp, open_images
from pixeldit.infra.devices import resolve_device
from pixeldit.infra.files import sha256_file

CARD_SCHEMA = "pixeldit-bench/imagenet-reference/v1"
STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
STAT_SHAPES = {"mu": (2048,), "sigma": (2048, 2048), "mu_s": (2023,), "sigma_s": (2023, 2023)}
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
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            if name == "checksum.npy":
                continue
            inner = hashlib.sha256()
            with archive.open(name) as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    inner.update(block)
            outer.update(f"{name}\n{inner.hexdigest()}\n".encode())
    value = outer.hexdigest()
    if memo:
        memo.put(stamp, {"checksum": value})
    return value


@dataclass
class Reference:
    """A resolved reference: images for P/R/KID and/or statistics for FID/sFID, with its protocol card."""
    description: str
    path: Path | None
    kind: str                            # "adm-batch", "pixeldit-reference", "statistics-only", "images"
    images: ImageSource | None           # arr_0 (or the folder / array / dataset itself)
    stat_keys: tuple[str, ...]           # statistics stored in the file
    card: dict | None
    sha256: str | None                   # of the .npz file, or the content hash of an image set

    @property
    def resolution(self) -> tuple[int, int] | None:
        if self.card:
            return tuple(self.card["resolution"])
        return tuple(self.images.resolution) if self.images is not None else None

    @property
    def stats_count(self) -> int | None:
        if self.card:
            return self.card["stats_count"]
        return None if self.stat_keys else (len(self.images) if self.images is not None else None)

    def load_stats(self, which: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(mu, sigma) for "fid" or (mu_s, sigma_s) for "sfid" from the file, None when not stored."""
        keys = ("mu", "sigma") if which == "fid" else ("mu_s", "sigma_s")
        if not set(keys) <= set(self.stat_keys):
            return None
        with np.load(self.path) as data:
            stats = tuple(np.asarray(data[key]) for key in keys)
        for key, value in zip(keys, stats):
            if value.shape != STAT_SHAPES[key] or not np.isfinite(value).all():
                raise InputError(f"reference {self.path} [{key}] has shape {value.shape} (expected "
                                 f"{STAT_SHAPES[key]}) or non-finite values; {BUILD_HINT}")
        return stats


def open_reference(reference, memo: HashMemo | None = None) -> Reference:
    """Open an ADM/pixeldit reference `.npz`, or use any image set (folder, dataset, array) as the reference."""
    if isinstance(reference, Reference):
        return reference
    if not (isinstance(reference, (str, os.PathLike)) and Path(reference).suffix.lower() == ".npz"):
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
    return Reference(str(path), path, kind, images, stat_keys, card, file_sha256(path, memo))


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


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_reference_npz(out: Path, images: ImageSource, image_count: int, stats: dict[str, np.ndarray],
                        card: dict, batch_size: int = 256) -> str:
    """Stream the first `image_count` images into `arr_0` and add statistics, card and checksum; atomic."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")[1])
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
               content_hash: str, build_command: str | None) -> dict:
    return {"schema": CARD_SCHEMA, "resolution": list(images.resolution), "extractor": EXTRACTOR_NAME,
            **weights.card(), "stats_count": stats_count, "images_count": images_count,
            "images": "the first images_count images of the source, in order",
            "source": images.describe(), "source_kind": images.kind, "source_content_sha256": content_hash,
            "transform": images.transform, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "build_command": build_command}


def reference_summary(reference: Reference) -> dict:
    """The reference part of a protocol card."""
    return {"file": reference.path.name if reference.path else reference.description, "kind": reference.kind,
            "sha256": reference.sha256, "count": len(reference.images) if reference.images is not None else None,
            "stats_count": reference.stats_count,
            "resolution": list(reference.resolution) if reference.resolution else None,
            "statistics": "from the file (mu/sigma/mu_s/sigma_s)" if reference.stat_keys else "from its images",
            "extractor": (reference.card or {}).get("weights", "ADM TF graph (assumed equal to this network)"
                                                    if reference.kind in ("adm-batch", "statistics-only") else None)}


def build_reference(images, out, res: int | None = None, *, split: str | None = None,
                    pr_images: int = DEFAULT_PR_IMAGES, batch_size: int | None = None, device=None,
                    cache_dir=None, weights: str = "auto", overwrite: bool = False, progress: bool = False,
                    build_command: str | None = None) -> dict:
    """Write an ADM-format reference `.npz` from a prepared dataset, a folder, an `.npz`/`.npy` or an array.

    Statistics (mu, sigma, mu_s, sigma_s) cover every image; `arr_0` keeps the first `pr_images` (ADM's
    batches keep 10,000) for precision/recall and KID. `res` centre-crops a folder of raw images the ADM
    way; any other input must already be `res`×`res`. Returns {"path", "sha256", "checksum", "card"}.
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
    cache = Cache(cache_dir)
    chosen = resolve_weights(weights, cache.memo)
    device = resolve_device(device)
    features = extract(source, chosen, LazyExtractor(chosen, device), cache=cache,
                       batch_size=batch_size or default_batch_size(device), progress=progress, label="reference")
    stats = {}
    stats["mu"], stats["sigma"] = fid_statistics(features.pool3)
    stats["mu_s"], stats["sigma_s"] = fid_statistics(features.spatial)
    count = min(pr_images, len(source))
    card = build_card(source, chosen, len(source), count, source.content_hash(cache.memo), build_command)
    checksum = write_reference_npz(out, source, count, stats, card)
    if cache.root is not None:
        # arr_0 holds the first `count` images, whose features were just computed: file them under the new
        # file's content key too, so evaluations against it skip the reference's Inception pass.
        extract(open_images(out, name="reference"), chosen, lambda: FeatureReplay(features, count, device),
                cache=cache, batch_size=batch_size or default_batch_size(device))
    return {"path": str(out), "sha256": sha256_file(out), "checksum": checksum, "card": card}


class FeatureReplay:
    """An extractor that hands back features already computed for the same images, in their order."""

    def __init__(self, features, count: int, device):
        self.device = device
        self.arrays = {"pool3": features.pool3[:count], "spatial": features.spatial[:count]}
        if features.logits is not None:
            self.arrays["logits"] = features.logits[:count]
        self.offset = 0

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = slice(self.offset, self.offset + len(images))
        self.offset = batch.stop
        return {name: np.asarray(array[batch]) for name, array in self.arrays.items()}
