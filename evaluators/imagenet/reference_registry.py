"""The registry of reference statistics: every reference set a result may name, with its facts and sources.

Each entry says what the file holds (arrays, counts), which metric uses which array, its licence and where
its facts come from. Downloadable entries are also entries of the external-file registry
(`pixeldit.infra.weights`), so one downloader fetches and checksums them; a sha256 is *pinned* only where a
public source states it (`sha256_source`), otherwise the entry is unpinned and `ref fetch` prints the
sha256 it computed. Entries the harness builds itself (`build_command`) have no URL: their bytes change
with every build (the protocol card records a creation time), so what is pinned is the card's content
(`card`: counts, resolution, the sha256 of the source images), which every correct build shares.

A file is checked against an entry when it is opened under that entry's name: given by name
(`--ref adm-imagenet256`), with an explicit `--reference-name`, or implicitly, because its file name is an
entry's file name (a file called `VIRTUAL_imagenet256_labeled.npz` must be ADM's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evaluators.imagenet.errors import ReferenceMismatchError
from pixeldit.infra import weights as external_files


class ReferenceChecksumError(external_files.ChecksumError, ReferenceMismatchError):
    """A file opened under a registry name is not that entry's file (a wrong, damaged or mislabelled copy)."""


ADM_LICENCE = ("MIT (openai/guided-diffusion, which publishes the batches); the images are ImageNet-derived, "
               "ImageNet's terms of access apply")
ADM_SOURCE = ("openai/guided-diffusion evaluations/README.md (URL, 'pre-computed statistics over the whole dataset, "
              "as well as 10,000 images for computing Precision and Recall') and evaluations/evaluator.py (which "
              "array each metric reads)")
ADM_CONTENTS = {"mu, sigma": "(2048,), (2048, 2048): Inception pool3 statistics over the whole training set",
                "mu_s, sigma_s": "(2023,), (2023, 2023): mixed_6/conv first 7 channels, the same images"}
ADM_METRICS = {"fid": "mu, sigma", "sfid": "mu_s, sigma_s", "precision": "arr_0", "recall": "arr_0",
               "kid": "arr_0", "is": "none (samples only)"}
EDM2_LICENCE = "CC BY-NC-SA 4.0 (NVlabs/edm2 README: 'All material, including source code and pre-trained models')"
EDM2_SOURCE = ("NVlabs/edm2 README.md ('pre-computed reference statistics ... available at "
               "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/') and calculate_metrics.py (`ref` writes "
               "pickle.dump(dict(num_images=N, fid=dict(mu, sigma), fd_dinov2=dict(mu, sigma))), float64 sums "
               "over the whole dataset, sigma with N - 1)")
EDM2_CONTENTS = {"num_images": "int: images the statistics cover",
                 "fid.mu, fid.sigma": "float64 (2048,), (2048, 2048): Inception-v3 2015-12-05 pool features",
                 "fd_dinov2.mu, fd_dinov2.sigma": "float64 (1024,), (1024, 1024): DINOv2 ViT-L/14 CLS features"}
EDM2_METRICS = {"fid": "fid.mu, fid.sigma", "fd_dinov2": "fd_dinov2.mu, fd_dinov2.sigma",
                "sfid": "unavailable (no spatial statistics)", "precision": "unavailable (no images)",
                "recall": "unavailable (no images)", "kid": "unavailable (no images)", "is": "none (samples only)"}


@dataclass(frozen=True)
class ReferenceEntry:
    name: str
    filename: str
    format: str                       # "adm-npz" | "edm2-pkl" | "pixeldit-npz"
    resolution: int
    contents: dict[str, str]          # array -> what it holds
    metrics: dict[str, str]           # metric -> the arrays it reads
    licence: str
    source: str                       # where the file and the facts above come from
    description: str
    url: str | None = None            # None: built by the harness (`build_command`)
    sha256: str | None = None         # None: no public source states it (unpinned)
    size: int | None = None
    sha256_source: str | None = None  # the public source of sha256 and size
    build_command: str | None = None
    default_path: str | None = None   # where the workflow writes a built entry
    card: dict = field(default_factory=dict)   # protocol-card facts every correct build of it has

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or bool(self.card)

    @property
    def location(self) -> Path:
        """Where the file of this entry is expected: the weights folder, or the workflow's path for built ones."""
        return Path(self.default_path) if self.url is None else external_files.path_of(self.name)

    def obtain_hint(self) -> str:
        if self.url is None:
            return f"build it with `{self.build_command}`"
        return f"fetch it with `pixeldit-bench ref fetch {self.name}` (downloads {self.url})"


REFERENCES: dict[str, ReferenceEntry] = {}


def register_reference(entry: ReferenceEntry) -> ReferenceEntry:
    """Add an entry (downloadable ones also to the external-file registry); same name, other content: an error."""
    existing = REFERENCES.get(entry.name)
    if existing is not None and existing != entry:
        raise ValueError(f"reference {entry.name!r} is already registered with different content")
    if entry.url is not None:
        external_files.register_weight(external_files.WeightFile(
            name=entry.name, url=entry.url, filename=entry.filename, licence=entry.licence, sha256=entry.sha256,
            size=entry.size, description=entry.description))
    REFERENCES[entry.name] = entry
    return entry


def unregister_reference(name: str) -> None:
    """Remove an entry (tests register temporary ones)."""
    entry = REFERENCES.pop(name)
    if entry.url is not None:
        external_files.WEIGHTS.pop(name, None)


def get_reference_entry(name: str) -> ReferenceEntry:
    try:
        return REFERENCES[name]
    except KeyError:
        raise KeyError(f"unknown reference {name!r}; `pixeldit-bench ref list` shows the registry "
                       f"({', '.join(sorted(REFERENCES))})") from None


def entry_for_filename(path: Path) -> ReferenceEntry | None:
    """The entry a file claims to be by its name alone, if any."""
    return next((entry for entry in REFERENCES.values() if entry.filename == Path(path).name), None)


def check_file(entry: ReferenceEntry, path: Path, sha256: str, card: dict | None) -> str:
    """Raise unless `path` (whose sha256 is given) is `entry`'s file; returns how it was verified."""
    if entry.sha256 is not None:
        if sha256 != entry.sha256:
            raise ReferenceChecksumError(
                f"reference {path} is not {entry.name!r}: its sha256 is {sha256}, the registry expects "
                f"{entry.sha256} ({entry.sha256_source}); {entry.obtain_hint()}, or pass the file under its own "
                f"name (rename it, or drop --reference-name) if it is another reference set")
        return f"sha256 equals the registry's (pinned from {entry.sha256_source})"
    if entry.card:
        found = {key: (card or {}).get(key) for key in entry.card}
        if found != entry.card:
            differ = {key: {"expected": entry.card[key], "found": found[key]} for key in entry.card
                      if found[key] != entry.card[key]}
            raise ReferenceChecksumError(
                f"reference {path} is not {entry.name!r}: its protocol card differs from the registry's in {differ}; "
                f"{entry.obtain_hint()}, or pass the file under its own name if it is another reference set")
        return "protocol card equals the registry's (" + ", ".join(sorted(entry.card)) + ")"
    return f"unpinned: no public sha256 for {entry.name!r}; this file's sha256 is {sha256}"


# ------------------------------------------------------------------------------------------------ the entries

_ADM_BASE = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet"

ADM_IMAGENET256 = register_reference(ReferenceEntry(
    name="adm-imagenet256", filename="VIRTUAL_imagenet256_labeled.npz", format="adm-npz", resolution=256,
    url=f"{_ADM_BASE}/256/VIRTUAL_imagenet256_labeled.npz",
    sha256="b32732719497e42660a9affb4a966068cba0855ac449b82015e34ec376d20758", size=2_037_122_530,
    sha256_source="the Git LFS pointer of VIRTUAL_imagenet256_labeled.npz in github.com/ruizegao/efficient-dit at "
                  "commit 7431e9202162c278c5f0b5f65bc702036818f891 (oid and size); the same sha256, size and URL "
                  "appear in a second public file, an asset manifest of another project",
    contents={**ADM_CONTENTS, "arr_0": "uint8 (10000, 256, 256, 3) reference images (10,000 per the README)"},
    metrics=ADM_METRICS, licence=ADM_LICENCE, source=ADM_SOURCE,
    description="ADM's ImageNet 256×256 reference batch (the paper's FID 1.61 protocol)"))

ADM_IMAGENET512 = register_reference(ReferenceEntry(
    name="adm-imagenet512", filename="VIRTUAL_imagenet512.npz", format="adm-npz", resolution=512,
    url=f"{_ADM_BASE}/512/VIRTUAL_imagenet512.npz",
    contents={**ADM_CONTENTS, "arr_0": "uint8 (N, 512, 512, 3) reference images; openai/guided-diffusion issue #19 "
                                       "reports 1,000 images, not 10,000 (not checked here)"},
    metrics=ADM_METRICS, licence=ADM_LICENCE, source=ADM_SOURCE + "; openai/guided-diffusion issue #19",
    description="ADM's ImageNet 512×512 reference batch"))

ADM_IMAGENET128 = register_reference(ReferenceEntry(
    name="adm-imagenet128", filename="VIRTUAL_imagenet128_labeled.npz", format="adm-npz", resolution=128,
    url=f"{_ADM_BASE}/128/VIRTUAL_imagenet128_labeled.npz",
    contents={**ADM_CONTENTS, "arr_0": "uint8 (10000, 128, 128, 3) reference images (10,000 per the README)"},
    metrics=ADM_METRICS, licence=ADM_LICENCE, source=ADM_SOURCE,
    description="ADM's ImageNet 128×128 reference batch"))

ADM_IMAGENET64 = register_reference(ReferenceEntry(
    name="adm-imagenet64", filename="VIRTUAL_imagenet64_labeled.npz", format="adm-npz", resolution=64,
    url=f"{_ADM_BASE}/64/VIRTUAL_imagenet64_labeled.npz",
    contents={**ADM_CONTENTS, "arr_0": "uint8 (10000, 64, 64, 3) reference images (10,000 per the README)"},
    metrics=ADM_METRICS, licence=ADM_LICENCE, source=ADM_SOURCE,
    description="ADM's ImageNet 64×64 reference batch"))

_EDM2_BASE = "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs"

EDM2_IMG512 = register_reference(ReferenceEntry(
    name="edm2-img512", filename="img512.pkl", format="edm2-pkl", resolution=512, url=f"{_EDM2_BASE}/img512.pkl",
    contents=EDM2_CONTENTS, metrics=EDM2_METRICS, licence=EDM2_LICENCE,
    source=EDM2_SOURCE + "; statistics of the RGB ImageNet train set at 512×512 (dataset_tool.py "
                         "--transform=center-crop-dhariwal, README 'Preparing datasets')",
    description="EDM2's ImageNet 512×512 reference statistics (FID and FD_DINOv2)"))

EDM2_IMG64 = register_reference(ReferenceEntry(
    name="edm2-img64", filename="img64.pkl", format="edm2-pkl", resolution=64, url=f"{_EDM2_BASE}/img64.pkl",
    contents=EDM2_CONTENTS, metrics=EDM2_METRICS, licence=EDM2_LICENCE,
    source=EDM2_SOURCE + "; ImageNet at 64×64 (how that dataset was prepared the README does not say)",
    description="EDM2's ImageNet 64×64 reference statistics (FID and FD_DINOv2)"))

# The embedded default's reference, built by the workflow (rule reference_statistics) from the 500 held-out digits.
# Pinned facts measured here (scikit-learn 1.9.1): any correct build has this card content, whichever of the two
# Inception weight files built it (they share features_sha256, see inception.py).
DIGITS32 = register_reference(ReferenceEntry(
    name="digits32-32-inception", filename="digits32-32-inception.npz", format="pixeldit-npz", resolution=32,
    build_command="pixeldit-bench data prepare digits32 --out results/data/digits32 --res 32 && pixeldit-bench ref "
                  "build results/data/digits32 --split reference --res 32 --out results/refs/digits32-32-inception.npz",
    default_path="results/refs/digits32-32-inception.npz",
    card={"schema": "pixeldit-bench/imagenet-reference/v1", "resolution": [32, 32], "stats_count": 500,
          "images_count": 500, "source_kind": "dataset",
          "source_content_sha256": "bb44b76f2ea97df69de432b17c7d472cc42d98a452b3e6b4e47e69f068060a51",
          "features_sha256": "fed43eb4ee0d93e581276fc2600ae7c364d79315bfb76f5bc155150b107fb917"},
    contents={"arr_0": "uint8 (500, 32, 32, 3): the held-out digits (50 per class)",
              "mu, sigma": "float64 (2048,), (2048, 2048): Inception pool3 statistics of the same 500 images",
              "mu_s, sigma_s": "float64 (2023,), (2023, 2023): mixed_6/conv first 7 channels",
              "protocol_card, checksum": "how it was built; sha256 over every other member, checked on open"},
    metrics=ADM_METRICS, licence="the UCI 'Optical Recognition of Handwritten Digits' data (archive.ics.uci.edu/dataset/80; its terms "
            "not checked here) as shipped by scikit-learn (BSD-3-Clause)",
    source="built by this harness: evaluators/imagenet/reference.py build_reference, workflow/rules/data.smk",
    description="the embedded default's reference statistics (digits32, 500 held-out images)"))
