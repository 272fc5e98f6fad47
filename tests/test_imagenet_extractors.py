"""The feature-extractor registry and `--features inception,dinov2`, on a tiny random-init DINOv2 of the same code
(tests/helpers.py: seeded weights in a temporary weights folder under a test registry name); nothing is
downloaded and the real `dinov2-vitl14` file is never present.
"""
import json

import numpy as np
import pytest
import torch
import typer
from helpers import TINY_DINOV2, TINY_DINOV2_SIZE, tiny_dinov2_registrations, write_tiny_dinov2_weights
from typer.testing import CliRunner

from evaluators.imagenet import evaluate_imagenet, plan_imagenet
from evaluators.imagenet import extractors as registry_of_extractors
from evaluators.imagenet.dinov2 import DINOv2Features, load_official
from evaluators.imagenet.errors import ImageNetEvalError, ReferenceMismatchError
from evaluators.imagenet.extractor_metrics import prdc
from evaluators.imagenet.extractors import get_extractor, normalise_features
from evaluators.imagenet.metrics import (
    DEFAULT_FRECHET_ROUTE,
    fid_statistics,
    frechet_distance,
    frechet_distance_of_features,
    kernel_inception_distance,
)
from evaluators.imagenet.reference import build_reference, open_reference
from pixeldit.cli.eval_imagenet import eval_imagenet
from pixeldit.data.digits import digits32_images
from pixeldit.infra import weights as registry
from pixeldit.infra.files import sha256_file
from pixeldit.infra.results import read_result
from pixeldit.infra.weights import MissingWeightsError

pytestmark = pytest.mark.usefixtures("imagenet_env")

TINY, TINY_SIZE = TINY_DINOV2, TINY_DINOV2_SIZE


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """12 samples and 12 reference digits (ADM .npz files), disjoint."""
    images = digits32_images()[0]
    folder = tmp_path_factory.mktemp("extractor_sets")
    np.savez(folder / "samples.npz", arr_0=images[:12])
    np.savez(folder / "reference.npz", arr_0=images[200:212])
    return folder / "samples.npz", folder / "reference.npz"


@pytest.fixture
def tiny_dinov2(monkeypatch):
    """`dinov2` replaced by the tiny network; its weights (seeded, official key layout) under a test name."""
    for table, key, entry in tiny_dinov2_registrations().values():
        monkeypatch.setitem(table, key, entry)
    path = write_tiny_dinov2_weights()
    yield path
    path.unlink()


def _direct(path, images: np.ndarray) -> np.ndarray:
    return DINOv2Features(load_official(path, config=TINY), "cpu", size=TINY_SIZE)(images)["dinov2"]


def _cli():
    app = typer.Typer()
    eval_app = typer.Typer()
    eval_app.command("imagenet")(eval_imagenet)
    app.add_typer(eval_app, name="eval")
    app.add_typer(typer.Typer(), name="unused")
    return app


def test_registry_entries_and_unknown_names():
    inception, dinov2 = get_extractor("inception"), get_extractor("dinov2")
    for entry in (inception, dinov2):
        card = entry.card()
        assert {"network", "weights", "input_resolution", "resize", "normalisation", "output_layer", "dim"} <= set(card)
    assert (inception.input_resolution, inception.dim) == (299, 2048)
    assert (dinov2.weights, dinov2.input_resolution, dinov2.dim) == ("dinov2-vitl14", 224, 1024)
    assert dinov2.resize["kind"] == "bicubic" and dinov2.resize["antialias"] is True and not dinov2.resize["clamp"]
    assert registry.get_entry("dinov2-vitl14").licence.startswith("Apache-2.0")
    assert normalise_features(None) == ("inception",)
    assert normalise_features("dinov2") == normalise_features("inception, dinov2,dinov2") == ("inception", "dinov2")
    with pytest.raises(ImageNetEvalError, match=r"unknown feature extractor 'swav'; known: inception, dinov2, clip"):
        normalise_features("inception,swav")


def test_inception_only_results_keep_their_keys(sets):
    record = evaluate_imagenet(*sets, metrics="kid", weights="offline")
    assert list(record["values"]) == ["kid", "kid_std"]
    assert "extractors" not in record["protocol"] and "extractors" not in record["extra"]


def test_features_dinov2_from_the_cli_equals_a_direct_computation(sets, tiny_dinov2, tmp_path):
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights",
                                         "offline", "--metrics", "kid", "--features", "inception,dinov2",
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = read_result(out)
    values = record["values"]
    assert list(values) == ["kid", "kid_std", "fd_dinov2", "fd_infinity_dinov2", "kid_dinov2", "kid_dinov2_std",
                            "precision_dinov2", "recall_dinov2", "density_dinov2", "coverage_dinov2"]
    assert values["kid"] == evaluate_imagenet(*sets, metrics="kid", weights="offline")["values"]["kid"]
    assert values["fd_infinity_dinov2"] is None and "more than 5000 samples" in record["unavailable"]["fd_infinity_dinov2"]

    samples, reference = (np.load(path)["arr_0"] for path in sets)
    smp, ref = _direct(tiny_dinov2, samples), _direct(tiny_dinov2, reference)
    assert values["fd_dinov2"] == frechet_distance_of_features(smp, *fid_statistics(ref))
    assert values["fd_dinov2"] > 0
    found = prdc(ref, smp)
    for metric in ("precision", "recall", "density", "coverage"):
        assert values[f"{metric}_dinov2"] == found[metric]
    kid = kernel_inception_distance(smp, ref)
    assert (values["kid_dinov2"], values["kid_dinov2_std"]) == (kid["kid"], kid["kid_std"])

    block = record["protocol"]["extractors"]["dinov2"]
    assert block["card"]["weights_file"]["sha256"] == sha256_file(tiny_dinov2)
    assert block["card"]["resize"]["antialias"] is True and block["card"]["dim"] == 32
    assert block["counts"] == {"samples": 12, "reference": 12} and block["fd"]["route"] == DEFAULT_FRECHET_ROUTE
    assert record["extra"]["extractors"]["dinov2"]["cache"] == {"samples_features": "miss",
                                                                 "reference_features": "miss"}

    again = evaluate_imagenet(*sets, metrics="kid", weights="offline", features=("inception", "dinov2"))
    assert again["values"] == values
    assert again["extra"]["extractors"]["dinov2"]["cache"] == {"samples_features": "hit", "reference_features": "hit"}


def test_damaged_extractor_cache_entry_is_recomputed(sets, tiny_dinov2, tmp_path):
    first = evaluate_imagenet(*sets, metrics="kid", weights="offline", features="dinov2", cache_dir=tmp_path)
    entry = first["extra"]["extractors"]["dinov2"]["feature_extraction"]["samples"]["key"]
    array = tmp_path / "features" / entry / "features.npy"
    data = np.load(array)
    data[0, 0] += 1
    np.save(array, data)
    with pytest.warns(UserWarning, match="do not match the sha256"):
        again = evaluate_imagenet(*sets, metrics="kid", weights="offline", features="dinov2", cache_dir=tmp_path)
    assert again["extra"]["extractors"]["dinov2"]["cache"]["samples_features"] == "miss"
    assert again["values"] == first["values"]


def test_absent_weights_make_the_metrics_unavailable(sets):
    assert not registry.path_of("dinov2-vitl14").is_file()
    record = evaluate_imagenet(*sets, metrics="kid", weights="offline", features="inception,dinov2")
    for metric in ("fd_dinov2", "kid_dinov2", "kid_dinov2_std", "precision_dinov2", "density_dinov2",
                   "coverage_dinov2"):
        assert record["values"][metric] is None
        reason = record["unavailable"][metric]
        assert reason.startswith("unavailable: dinov2 weights not installed")
        assert "`pixeldit-bench weights fetch dinov2-vitl14`" in reason
    assert record["values"]["kid"] is not None
    assert record["protocol"]["extractors"]["dinov2"]["status"] == record["unavailable"]["fd_dinov2"]


def test_more_images_than_dimensions_use_the_streamed_statistics(tiny_dinov2, tmp_path):
    """40 samples of 32-d features: the FD comes from float64 sums streamed during extraction (float64 mean; ADM's
    is float32), which the cache keeps beside the features, and equals the FD of np.cov of the stacked rows."""
    images = digits32_images()[0]
    np.savez(tmp_path / "samples.npz", arr_0=images[:40])
    np.savez(tmp_path / "reference.npz", arr_0=images[300:345])
    run = dict(metrics="kid", weights="offline", features="dinov2", cache_dir=tmp_path / "cache", batch_size=16)
    first = evaluate_imagenet(tmp_path / "samples.npz", tmp_path / "reference.npz", **run)
    extraction = first["extra"]["extractors"]["dinov2"]["feature_extraction"]
    assert extraction["samples"]["statistics"] == {"features": "streamed float64 sums (n > d)"}
    entry = tmp_path / "cache" / "features" / extraction["samples"]["key"]
    assert (entry / "features.stats.npy").is_file() and "features.stats" in extraction["samples"]["sha256"]
    smp, ref = (_direct(tiny_dinov2, images[begin:end]).astype(np.float64) for begin, end in ((0, 40), (300, 345)))
    # float64 rows, so that np.mean is float64 as the streamed mean is; the tiny random network's FD is small
    # (~1e-4) beside its traces, so rounding of the sums shows at ~1e-9 relative
    expected = frechet_distance(*fid_statistics(smp), *fid_statistics(ref))
    assert first["values"]["fd_dinov2"] == pytest.approx(expected, rel=1e-6)
    assert first["protocol"]["extractors"]["dinov2"]["statistics"].startswith("more images than feature dimensions")
    again = evaluate_imagenet(tmp_path / "samples.npz", tmp_path / "reference.npz", **run)
    assert again["extra"]["extractors"]["dinov2"]["cache"] == {"samples_features": "hit", "reference_features": "hit"}
    assert again["values"] == first["values"]


def test_statistics_stored_in_the_reference_file(sets, tiny_dinov2, tmp_path):
    """A reference with mu_dinov2/sigma_dinov2 (what `ref build --features` writes) gives FD_DINOv2 from them; the
    metrics that need the reference's images are unavailable when it has none."""
    reference = np.load(sets[1])["arr_0"]
    ref_features = _direct(tiny_dinov2, reference)
    mu, sigma = fid_statistics(ref_features)
    pool = np.random.default_rng(0).normal(size=(40, 2048))
    stats_only = tmp_path / "stats.npz"
    np.savez(stats_only, mu=pool.mean(0), sigma=np.cov(pool, rowvar=False), mu_dinov2=mu, sigma_dinov2=sigma)
    record = evaluate_imagenet(sets[0], stats_only, metrics="fid", weights="offline", features="dinov2")
    smp = _direct(tiny_dinov2, np.load(sets[0])["arr_0"])
    assert record["values"]["fd_dinov2"] == frechet_distance_of_features(smp, mu, sigma)
    assert record["protocol"]["extractors"]["dinov2"]["reference_statistics"] == "from the file (mu_dinov2/sigma_dinov2)"
    assert "statistics only" in record["unavailable"]["kid_dinov2"]
    assert record["extra"]["extractors"]["dinov2"]["cache"]["reference_features"] is None


def test_reference_built_with_dinov2_stores_its_statistics(sets, tiny_dinov2, tmp_path):
    """`ref build --features inception,dinov2` writes mu_dinov2/sigma_dinov2 over every image with the extractor's
    card; evaluations take FD_DINOv2 from them, and refuse them when this run's DINOv2 weights differ."""
    images = np.load(sets[1])["arr_0"]
    out = tmp_path / "ref.npz"
    written = build_reference(images, out, 32, pr_images=8, weights="offline", features="inception,dinov2",
                              cache_dir=tmp_path / "cache")
    assert written["card"]["extractors"]["dinov2"]["weights_file"]["sha256"] == sha256_file(tiny_dinov2)
    reference = open_reference(out)
    assert reference.extractor_stats == ("dinov2",) and len(reference.images) == 8
    expected = fid_statistics(_direct(tiny_dinov2, images))         # 12 images of 32-d: np.mean / np.cov
    for stored, direct in zip(reference.load_stats("fd_dinov2"), expected):
        np.testing.assert_allclose(stored, direct, rtol=1e-5, atol=1e-6)
    record = evaluate_imagenet(sets[0], out, metrics="fid", weights="offline", features="dinov2",
                               cache_dir=tmp_path / "cache")
    assert record["protocol"]["extractors"]["dinov2"]["reference_statistics"] == "from the file (mu_dinov2/sigma_dinov2)"
    smp = _direct(tiny_dinov2, np.load(sets[0])["arr_0"])
    assert record["values"]["fd_dinov2"] == pytest.approx(
        frechet_distance_of_features(smp, *reference.load_stats("fd_dinov2")), rel=1e-6)

    torch.save({name: tensor + 0.01 for name, tensor in torch.load(tiny_dinov2).items()}, tiny_dinov2)
    with pytest.raises(ReferenceMismatchError, match="holds dinov2 statistics from weights"):
        plan_imagenet(sets[0], out, metrics="fid", weights="offline", features="dinov2")


def test_reference_build_asked_for_an_absent_extractor_fails(sets, tmp_path):
    with pytest.raises(MissingWeightsError, match="cannot build dinov2 statistics: dinov2 weights not installed"):
        build_reference(np.load(sets[1])["arr_0"], tmp_path / "ref.npz", 32, weights="offline", features="dinov2")
    assert not (tmp_path / "ref.npz").exists()


def test_statistics_only_reference_and_other_backends(sets, tiny_dinov2, tmp_path):
    stats_only = tmp_path / "stats.npz"
    features = np.random.default_rng(0).normal(size=(40, 2048))
    spatial = np.random.default_rng(1).normal(size=(40, 2023))
    np.savez(stats_only, mu=features.mean(0), sigma=np.cov(features, rowvar=False), mu_s=spatial.mean(0),
             sigma_s=np.cov(spatial, rowvar=False))
    plan = plan_imagenet(sets[0], stats_only, metrics="fid", weights="offline", features="dinov2")
    assert "neither dinov2 statistics" in plan.unavailable["fd_dinov2"]
    assert "statistics only" in plan.unavailable["coverage_dinov2"]
    assert plan.summary()["features"] == ["inception", "dinov2"]
    with pytest.raises(ImageNetEvalError, match="backend='adm' only"):
        plan_imagenet(*sets, backend="torch-fidelity", weights="offline", features="dinov2")


def test_cli_unknown_extractor_and_dry_run(sets, tiny_dinov2):
    runner = CliRunner()
    wrong = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights", "offline",
                                   "--features", "inception,swav", "--dry-run"])
    assert wrong.exit_code == 1 and "unknown feature extractor 'swav'" in wrong.output
    assert "inception, dinov2" in wrong.output
    dry = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights", "offline",
                                 "--features", "inception,dinov2", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)
    assert plan["extractors"]["dinov2"]["weights_file"]["sha256"] == sha256_file(tiny_dinov2)


def test_module_registers_the_dinov2_weight_file():
    assert registry_of_extractors.DINOV2_EXTRACTOR.weights in registry.WEIGHTS
