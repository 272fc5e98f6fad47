"""The feature-extractor registry and `--features inception,dinov2`, on a tiny random-init DINOv2 of the same code.

The tiny network is `dinov2.DinoV2ViT` with a small config (its 3×3 position grid is resized to the input's 4×4,
as ViT-L/14's 37×37 is to 16×16), seeded weights written to a temporary weights folder under a test registry
name; nothing is downloaded and the real `dinov2-vitl14` file is never present.
"""
import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from evaluators.imagenet import evaluate_imagenet, plan_imagenet
from evaluators.imagenet import extractors as registry_of_extractors
from evaluators.imagenet.dinov2 import DINOv2Features, DinoV2ViT, load_official
from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.extractor_metrics import density_coverage
from evaluators.imagenet.extractors import EXTRACTORS, dinov2_extractor, get_extractor, normalise_features
from evaluators.imagenet.metrics import DEFAULT_FRECHET_ROUTE, fid_statistics, frechet_distance_of_features
from pixeldit.cli.eval_imagenet import eval_imagenet
from pixeldit.data.digits import digits32_images
from pixeldit.infra import weights as registry
from pixeldit.infra.files import sha256_file
from pixeldit.infra.results import read_result

pytestmark = pytest.mark.usefixtures("imagenet_env")

TINY = dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=4, patch_size=14, checkpoint_grid=3)
TINY_SIZE = 56                                      # a 4×4 patch grid
TINY_WEIGHTS = registry.WeightFile(name="dinov2-tiny-test", url="file:///nonexistent/dinov2-tiny-test.pth",
                                   filename="dinov2-tiny-test.pth", licence="test", description="tiny test DINOv2")


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
    monkeypatch.setitem(registry.WEIGHTS, TINY_WEIGHTS.name, TINY_WEIGHTS)
    monkeypatch.setitem(EXTRACTORS, "dinov2", dinov2_extractor("dinov2", TINY_WEIGHTS.name, TINY, TINY_SIZE))
    generator = torch.Generator().manual_seed(7)
    state = {name: 0.2 * torch.randn(tensor.shape, generator=generator) + (1 if name.endswith(".gamma") else 0)
             for name, tensor in DinoV2ViT(**TINY).state_dict().items()}
    path = registry.path_of(TINY_WEIGHTS.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
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
    with pytest.raises(ImageNetEvalError, match=r"unknown feature extractor 'clip'; known: inception, dinov2"):
        normalise_features("inception,clip")


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
    assert list(values) == ["kid", "kid_std", "fd_dinov2", "density_dinov2", "coverage_dinov2"]
    assert values["kid"] == evaluate_imagenet(*sets, metrics="kid", weights="offline")["values"]["kid"]

    samples, reference = (np.load(path)["arr_0"] for path in sets)
    smp, ref = _direct(tiny_dinov2, samples), _direct(tiny_dinov2, reference)
    assert values["fd_dinov2"] == frechet_distance_of_features(smp, *fid_statistics(ref))
    assert values["fd_dinov2"] > 0
    dc = density_coverage(ref, smp)
    assert (values["density_dinov2"], values["coverage_dinov2"]) == (dc["density"], dc["coverage"])

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
    for metric in ("fd_dinov2", "density_dinov2", "coverage_dinov2"):
        assert record["values"][metric] is None
        reason = record["unavailable"][metric]
        assert reason.startswith("unavailable: dinov2 weights not installed")
        assert "`pixeldit-bench weights fetch dinov2-vitl14`" in reason
    assert record["values"]["kid"] is not None
    assert record["protocol"]["extractors"]["dinov2"]["status"] == record["unavailable"]["fd_dinov2"]


def test_statistics_only_reference_and_other_backends(sets, tiny_dinov2, tmp_path):
    stats_only = tmp_path / "stats.npz"
    features = np.random.default_rng(0).normal(size=(40, 2048))
    spatial = np.random.default_rng(1).normal(size=(40, 2023))
    np.savez(stats_only, mu=features.mean(0), sigma=np.cov(features, rowvar=False), mu_s=spatial.mean(0),
             sigma_s=np.cov(spatial, rowvar=False))
    plan = plan_imagenet(sets[0], stats_only, metrics="fid", weights="offline", features="dinov2")
    assert "statistics only" in plan.unavailable["fd_dinov2"] and "dinov2" in plan.unavailable["coverage_dinov2"]
    assert plan.summary()["features"] == ["inception", "dinov2"]
    with pytest.raises(ImageNetEvalError, match="backend='adm' only"):
        plan_imagenet(*sets, backend="torch-fidelity", weights="offline", features="dinov2")


def test_cli_unknown_extractor_and_dry_run(sets, tiny_dinov2):
    runner = CliRunner()
    wrong = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights", "offline",
                                   "--features", "inception,clip", "--dry-run"])
    assert wrong.exit_code == 1 and "unknown feature extractor 'clip'" in wrong.output
    assert "inception, dinov2" in wrong.output
    dry = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights", "offline",
                                 "--features", "inception,dinov2", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)
    assert plan["extractors"]["dinov2"]["weights_file"]["sha256"] == sha256_file(tiny_dinov2)


def test_module_registers_the_dinov2_weight_file():
    assert registry_of_extractors.DINOV2_EXTRACTOR.weights in registry.WEIGHTS
