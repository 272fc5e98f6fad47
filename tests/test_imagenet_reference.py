"""Reference sets: ADM-format batches with and without statistics, the builder, protocol mismatches."""
import io
import json
import zipfile

import numpy as np
import pytest

from evaluators.imagenet import build_reference, open_reference, plan_imagenet
from evaluators.imagenet.errors import InputError, ReferenceMismatchError
from evaluators.imagenet.inception import resolve_weights
from evaluators.imagenet.reference import STAT_SHAPES, check_compatible
from evaluators.imagenet.sources import open_images
from pixeldit.data.digits import digits32_images

pytestmark = pytest.mark.usefixtures("imagenet_env")


@pytest.fixture(scope="module")
def digits():
    return digits32_images()[0]


def _stats(seed=0):
    rng = np.random.default_rng(seed)
    return {key: (rng.normal(size=shape[0]) if len(shape) == 1 else np.eye(shape[0])) for key, shape in
            STAT_SHAPES.items()}


def _images(count=8, size=16):
    return np.random.default_rng(1).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_adm_batch_with_statistics(tmp_path):
    path = tmp_path / "VIRTUAL_tiny_labeled.npz"
    stats = _stats()
    np.savez(path, arr_0=_images(), arr_1=np.arange(8), **stats)
    ref = open_reference(path)
    assert ref.kind == "adm-batch" and ref.card is None and ref.stat_keys == ("mu", "sigma", "mu_s", "sigma_s")
    assert len(ref.images) == 8 and ref.resolution == (16, 16)
    mu, sigma = ref.load_stats("fid")
    np.testing.assert_array_equal(mu, stats["mu"])
    assert ref.load_stats("sfid")[1].shape == (2023, 2023)
    plan = plan_imagenet(_images(8), path, weights="offline", cache_dir=False)
    assert plan.computed == ("fid", "sfid", "precision", "recall", "kid")       # IS: offline weights
    assert plan.summary()["reference"]["statistics"].startswith("from the file")


def test_adm_batch_without_statistics_uses_its_images(tmp_path):
    path = tmp_path / "images_only.npz"
    np.savez(path, arr_0=_images())
    ref = open_reference(path)
    assert ref.stat_keys == () and ref.load_stats("fid") is None and ref.stats_count == 8
    plan = plan_imagenet(_images(8), path, weights="offline", cache_dir=False)
    assert set(plan.unavailable) == {"is"} and plan.computed == ("fid", "sfid", "precision", "recall", "kid")


def test_statistics_only_file_gives_fid_alone(tmp_path):
    path = tmp_path / "adm_in256_stats.npz"
    stats = _stats()
    np.savez(path, mu=stats["mu"], sigma=stats["sigma"])
    plan = plan_imagenet(_images(8), path, weights="offline", cache_dir=False)
    assert plan.computed == ("fid",)
    assert "statistics only" in plan.unavailable["precision"] and "no mu_s" in plan.unavailable["sfid"]


def test_reference_of_the_wrong_resolution_names_both_sides(tmp_path):
    path = tmp_path / "ref.npz"
    np.savez(path, arr_0=_images(size=16))
    with pytest.raises(ReferenceMismatchError, match=r"samples .* are 8×8 but reference .*ref\.npz is 16×16.*res 8"):
        plan_imagenet(_images(size=8), path, weights="offline", cache_dir=False)


def test_expected_sample_count(tmp_path):
    path = tmp_path / "ref.npz"
    np.savez(path, arr_0=_images())
    with pytest.raises(ReferenceMismatchError, match="hold 8 images, the protocol asks for 50000"):
        plan_imagenet(_images(), path, weights="offline", cache_dir=False, expected_samples=50000)


def test_broken_reference_files(tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty, labels=np.arange(3))
    with pytest.raises(InputError, match="neither images .* nor statistics"):
        open_reference(empty)
    half = tmp_path / "half.npz"
    np.savez(half, mu=np.zeros(2048))
    with pytest.raises(InputError, match="come in pairs"):
        open_reference(half)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(InputError, match=r"\[mu\] has shape \(64,\)"):
        open_reference(wrong).load_stats("fid")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="truncated or corrupt"):
        open_reference(truncated)


def test_build_reference_writes_adm_keys_card_and_checksum(tmp_path, digits):
    out = tmp_path / "digits-ref.npz"
    written = build_reference(digits[:12], out, res=32, pr_images=10, weights="offline")
    with np.load(out) as data:                                 # what ADM's evaluator reads
        assert {"arr_0", "mu", "sigma", "mu_s", "sigma_s"} <= set(data.files)
        assert data["arr_0"].shape == (10, 32, 32, 3) and data["mu_s"].shape == (2023,)
        np.testing.assert_array_equal(data["arr_0"], digits[:10])
    card = written["card"]
    assert (card["stats_count"], card["images_count"], card["resolution"]) == (12, 10, [32, 32])
    assert card["weights"] == "inception-offline"
    assert card["features_sha256"] == resolve_weights("offline").features_sha256
    ref = open_reference(out)
    assert ref.kind == "pixeldit-reference" and ref.card == card and ref.resolution == (32, 32)
    with pytest.raises(InputError, match="already exists"):
        build_reference(digits[:12], out, res=32)
    # tamper with one member: the checksum names the file
    with zipfile.ZipFile(out) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with np.load(out) as data:
        mu = data["mu"] + 1
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, mu)
    members["mu.npy"] = buffer.getvalue()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(InputError, match=f"reference {out} fails its checksum"):
        open_reference(out)


def test_build_reference_checks_resolution(tmp_path, digits):
    with pytest.raises(ReferenceMismatchError, match=r"holds 32×32 images but --res asks for 64×64"):
        build_reference(digits[:12], tmp_path / "x.npz", res=64, weights="offline")


def test_reference_from_other_weights_is_refused(tmp_path):
    path = tmp_path / "ref.npz"
    np.savez(path, arr_0=_images())
    ref = open_reference(path)
    ref.card = {"resolution": [16, 16], "stats_count": 8, "images_count": 8, "weights": "inception",
                "features_sha256": "0" * 64}
    with pytest.raises(ReferenceMismatchError, match=r"built with Inception weights inception \(feature digest 0+\), "
                                                     r"this run uses inception-offline"):
        check_compatible(ref, open_images(_images()), resolve_weights("offline"))


def test_reference_card_is_json(tmp_path, digits):
    out = tmp_path / "r.npz"
    build_reference(digits[:12], out, pr_images=12, weights="offline")
    with np.load(out) as data:
        card = json.loads(str(data["protocol_card"]))
    assert card["schema"] == "pixeldit-bench/imagenet-reference/v1" and card["source_kind"] == "array"


def _tiny_dataset(path, images):
    from pixeldit.infra.datasets import DatasetWriter

    with DatasetWriter(path, images.shape[1]) as writer:
        for index, image in enumerate(images):
            writer.add(image, index % 2)
        return writer.finish({"name": "tiny", "num_classes": 2, "class_names": ["a", "b"], "source": {},
                              "preprocessing": "none", "prepare_command": "test"},
                             splits={"train": (0, 6), "reference": (6, len(images))})


def test_build_reference_from_a_prepared_dataset_split(tmp_path, digits):
    dataset = _tiny_dataset(tmp_path / "tiny", digits[:10])
    source = open_images(dataset, split="reference")
    assert source.kind == "dataset" and len(source) == 4 and source.resolution == (32, 32)
    np.testing.assert_array_equal(np.concatenate(list(source.batches(3))), digits[6:10])
    out = tmp_path / "tiny-32.npz"
    card = build_reference(dataset, out, res=32, split="reference", weights="offline")["card"]
    assert (card["source_kind"], card["stats_count"], card["images_count"]) == ("dataset", 4, 4)
    with pytest.raises(InputError, match="prepared dataset at 32×32, not 64×64"):
        build_reference(dataset, tmp_path / "x.npz", res=64, split="reference", weights="offline")
    with pytest.raises(InputError, match="has no split 'val'"):
        open_images(dataset, split="val")


def test_built_reference_seeds_the_feature_cache_for_its_own_file(tmp_path, digits):
    """Evaluating against a freshly built reference reuses the build's features: no second Inception pass."""
    from evaluators.imagenet import evaluate_imagenet
    from evaluators.imagenet.features import Cache, LazyExtractor, extract, feature_key

    out, cache = tmp_path / "ref.npz", tmp_path / "cache"
    build_reference(digits[:12], out, weights="offline", pr_images=8, cache_dir=cache)
    weights = resolve_weights("offline")
    seeded = extract(open_images(out), weights, lambda: pytest.fail("the reference was extracted again"),
                     cache=Cache(cache), batch_size=5)
    assert seeded.cache_hit and seeded.count == 8
    assert seeded.key == feature_key(open_images(out).content_hash(), weights)
    fresh = extract(open_images(digits[:8]), weights, LazyExtractor(weights, "cpu"), cache=Cache(False), batch_size=5)
    np.testing.assert_allclose(seeded.pool3, fresh.pool3, atol=1e-4)   # the first 8 of the build's 12, in order
    result = evaluate_imagenet(digits[20:28], out, metrics=["fid", "kid"], weights="offline", cache_dir=cache)
    assert result["extra"]["cache"]["reference_features"] == "hit"
