"""evaluate_imagenet end to end on a few real digits with the offline Inception; cache, backends, CLI."""
import json
import time

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from evaluators.imagenet import evaluate_imagenet
from evaluators.imagenet.inception import UNAVAILABLE_IS
from evaluators.registry import get_evaluator
from pixeldit.cli.eval_imagenet import eval_imagenet, ref_app
from pixeldit.data.digits import digits32_images
from pixeldit.infra.results import SCHEMA, read_result

pytestmark = pytest.mark.usefixtures("imagenet_env")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """12 samples (an ADM .npz) and 12 reference digits (another .npz), disjoint."""
    images = digits32_images()[0]
    folder = tmp_path_factory.mktemp("sets")
    np.savez(folder / "samples.npz", arr_0=images[:12])
    np.savez(folder / "reference.npz", arr_0=images[100:112])
    return folder / "samples.npz", folder / "reference.npz"


@pytest.fixture(scope="module")
def first(sets):
    started = time.perf_counter()
    record = evaluate_imagenet(*sets, metrics=["is", "precision", "recall", "kid"], weights="offline")
    return record, time.perf_counter() - started


def test_registered_and_result_record(first, sets):
    record, _ = first
    assert get_evaluator("imagenet") is evaluate_imagenet
    assert record["schema"] == SCHEMA and record["evaluator"] == {"name": "imagenet", "version": "4", "backend": "adm"}
    values = record["values"]
    assert values["is"] is None and record["unavailable"]["is"] == UNAVAILABLE_IS
    assert 0 <= values["precision"] <= 1 and 0 <= values["recall"] <= 1 and np.isfinite(values["kid"])
    protocol = record["protocol"]
    assert protocol["extractor"]["weights"] == "inception-offline"
    assert len(protocol["extractor"]["weights_sha256"]) == 64
    assert protocol["reference"]["file"] == "reference.npz" and protocol["reference"]["count"] == 12
    assert protocol["reference"]["resolution"] == [32, 32] and len(protocol["reference"]["sha256"]) == 64
    assert protocol["samples"] == {"count": 12, "resolution": [32, 32]}
    assert protocol["precision_recall"]["k"] == 3 and protocol["precision_recall"]["fp16_distances"] is True
    assert (protocol["kid"]["subsets"], protocol["kid"]["subset_size"], protocol["kid"]["rng_seed"]) == (100, 12, 2020)
    assert protocol["is"]["split_rule"] == "adm" and (protocol["is"]["split_size"], protocol["is"]["splits"]) == (5000, 1)
    assert record["samples"]["count"] == 12 and record["samples"]["file_sha256"] is not None
    pr = record["extra"]["precision_recall"]
    assert pr["fp16_emulated"]["precision"] == values["precision"] and "fp16_changes_result" in pr
    assert record["extra"]["cache"] == {"samples_features": "miss", "reference_features": "miss", "metrics": "miss"}


def test_second_run_is_cached(first, sets):
    record, seconds = first
    started = time.perf_counter()
    again = evaluate_imagenet(*sets, metrics=["is", "precision", "recall", "kid"], weights="offline")
    assert time.perf_counter() - started < seconds / 20
    assert again["values"] == record["values"] and again["extra"]["cache"]["metrics"] == "hit"
    subset = evaluate_imagenet(*sets, metrics="kid", weights="offline")   # new metric set: features from disk
    assert subset["extra"]["cache"]["samples_features"] == "hit" and subset["values"]["kid"] == record["values"]["kid"]


def test_set_against_itself(sets):
    record = evaluate_imagenet(sets[0], sets[0], metrics=["precision", "recall", "kid"], weights="offline")
    assert record["values"]["precision"] == record["values"]["recall"] == 1.0
    # identical sets: the unbiased MMD² is 2(ΣK - m·trK)/(m²(m-1)) <= 0 (Cauchy-Schwarz), slightly negative
    assert -0.1 < record["values"]["kid"] <= 1e-9


def test_mixed_resolution_folder_fails_during_extraction(tmp_path, sets):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "b.png")
    from evaluators.imagenet.errors import InputError

    with pytest.raises(InputError, match="mixed resolutions"):
        evaluate_imagenet(tmp_path, sets[1], metrics="kid", weights="offline", cache_dir=False)


def test_torch_fidelity_backend_agrees_with_adm_fp32_precision_recall(first, sets):
    record = evaluate_imagenet(*sets, backend="torch-fidelity", metrics=["precision", "recall", "kid", "sfid"],
                               weights="offline")
    assert record["evaluator"]["backend"] == "torch-fidelity" and record["values"]["sfid"] is None
    assert "torch-fidelity" in record["unavailable"]["sfid"]
    adm_fp32 = first[0]["extra"]["precision_recall"]["fp32"]
    assert record["values"]["precision"] == pytest.approx(adm_fp32["precision"], abs=1e-6)   # float32 mean there
    assert record["values"]["recall"] == pytest.approx(adm_fp32["recall"], abs=1e-6)
    assert record["values"]["kid"] == pytest.approx(first[0]["values"]["kid"], abs=1e-4)


def test_clean_fid_backend(sets):
    record = evaluate_imagenet(*sets, backend="clean-fid", metrics=["kid", "precision"], weights="offline")
    assert record["evaluator"]["backend"] == "clean-fid" and np.isfinite(record["values"]["kid"])
    assert record["values"]["precision"] is None and "clean-fid" in record["unavailable"]["precision"]
    assert record["protocol"]["resize"].startswith("clean-fid 'clean'")


def _cli():
    app = typer.Typer()
    eval_app = typer.Typer()
    eval_app.command("imagenet")(eval_imagenet)
    app.add_typer(eval_app, name="eval")
    app.add_typer(ref_app, name="ref")
    return app


def test_cli_eval_dry_run_and_json(sets, tmp_path):
    runner = CliRunner()
    dry = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights", "offline",
                                 "--dry-run"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)
    assert plan["samples"]["count"] == 12 and plan["metrics"] == ["fid", "sfid", "precision", "recall", "kid"]
    assert plan["is_split_rule"] == "adm"
    ten = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights", "offline",
                                 "--is-splits", "ten-splits-below-50k", "--dry-run"])
    assert ten.exit_code == 0 and json.loads(ten.output)["is_split_rule"] == "ten-splits-below-50k"
    wrong = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--is-splits", "five",
                                   "--dry-run"])
    assert wrong.exit_code == 1 and "unknown IS split rule 'five'" in wrong.output
    out = tmp_path / "metrics.json"
    run = runner.invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(sets[1]), "--weights", "offline",
                                 "--metrics", "kid", "--out", str(out), "--label", "variant=digits",
                                 "--label", "kimg=4"])
    assert run.exit_code == 0, run.output
    record = read_result(out)
    assert "kid" in run.output and record["values"]["kid"] is not None
    assert record["run"] == {"variant": "digits", "kimg": "4"}


def test_sampler_sidecar_fills_model_and_sampler(sets, tmp_path):
    samples = tmp_path / "samples.npz"
    samples.write_bytes(sets[0].read_bytes())
    samples.with_suffix(".json").write_text(json.dumps({
        "schema": "pixeldit-bench/samples/v1", "settings": {"sampler": "euler-50", "seed": 0, "network_sha256": "ab",
                                                             "quantization": "round"},
        "sampler_config": {"method": "euler", "steps": 50, "cfg_scale": 2.75}, "network": {"path": "net.safetensors"}}))
    record = evaluate_imagenet(samples, sets[1], metrics="kid", weights="offline")
    assert record["sampler"]["name"] == "euler-50" and record["sampler"]["cfg_scale"] == 2.75
    assert record["model"]["network_sha256"] == "ab"


def test_cli_errors_name_the_file(sets, tmp_path):
    wrong = tmp_path / "ref16.npz"
    np.savez(wrong, arr_0=np.zeros((4, 16, 16, 3), np.uint8))
    result = CliRunner().invoke(_cli(), ["eval", "imagenet", str(sets[0]), "--ref", str(wrong), "--weights", "offline"])
    assert result.exit_code == 1 and "16×16" in result.output and "32×32" in result.output


def test_cli_ref_build(sets, tmp_path):
    out = tmp_path / "ref.npz"
    runner = CliRunner()
    dry = runner.invoke(_cli(), ["ref", "build", str(sets[1]), "--res", "32", "--out", str(out), "--weights", "offline",
                                 "--dry-run"])
    assert dry.exit_code == 0 and json.loads(dry.output)["count"] == 12 and not out.exists()
    built = runner.invoke(_cli(), ["ref", "build", str(sets[1]), "--res", "32", "--out", str(out), "--weights",
                                   "offline", "--pr-images", "8"])
    assert built.exit_code == 0, built.output
    info = runner.invoke(_cli(), ["ref", "info", str(out)])
    assert info.exit_code == 0 and json.loads(info.output)["card"]["images_count"] == 8


@pytest.mark.slow
def test_fid_and_sfid_of_a_set_with_itself_end_to_end(sets):
    """Real 2048-d and 2023-d sqrtm (singular covariances from 12 images) on 2 cores: 30-60 s."""
    record = evaluate_imagenet(sets[0], sets[0], metrics=["fid", "sfid"], weights="offline")
    assert abs(record["values"]["fid"]) < 1e-3 and abs(record["values"]["sfid"]) < 1e-3


def test_damaged_cache_entries_are_discarded_and_recomputed(sets, tmp_path):
    """Issue 17: rows of a cached pool3.npy overwritten (shape kept) and an edited metric memo were once reported as
    they were; now both fail their recorded sha256, are discarded with a warning, and the values come back."""
    cache = tmp_path / "cache"
    first = evaluate_imagenet(*sets, metrics=["fid", "kid"], weights="offline", cache_dir=cache)
    memo = next((cache / "metrics").glob("*.json"))
    edited = json.loads(memo.read_text())
    edited["values"]["fid"] = 1.0
    memo.write_text(json.dumps(edited))
    with pytest.warns(UserWarning, match="memoised metric values .* do not match the sha256"):
        again = evaluate_imagenet(*sets, metrics=["fid", "kid"], weights="offline", cache_dir=cache)
    assert again["values"] == first["values"] and again["extra"]["cache"]["metrics"] == "miss"
    assert again["extra"]["cache"]["samples_features"] == "hit"

    key = first["extra"]["feature_extraction"]["samples"]["key"]
    pool3 = np.load(cache / "features" / key / "pool3.npy")
    pool3[:4] = pool3[4:8]
    np.save(cache / "features" / key / "pool3.npy", pool3)
    next((cache / "metrics").glob("*.json")).unlink()
    with pytest.warns(UserWarning, match="cached features .* do not match the sha256 .* extracted again"):
        third = evaluate_imagenet(*sets, metrics=["fid", "kid"], weights="offline", cache_dir=cache)
    assert third["values"] == first["values"] and third["extra"]["cache"]["samples_features"] == "miss"
