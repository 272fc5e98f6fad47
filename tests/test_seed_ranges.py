"""Seed ranges end to end: `sample --seed-ranges 3` of a tiny network, `eval imagenet DIR --seed-ranges` scoring each
range through the evaluator and writing one result of mean, std and EDM2's minimum (checked against numpy on the
per-range results), the folder checks, and how compare and the report show a mean over ranges."""
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from evaluators.imagenet import evaluate_imagenet
from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.seed_ranges import RANGE_RESULT, find_seed_ranges
from pixeldit.cli import app
from pixeldit.cli.console import EXIT_CAVEAT
from pixeldit.infra.files import write_json_atomic
from pixeldit.models import build_network
from pixeldit.models.io import save_network
from pixeldit.report.build import build_report

pytestmark = pytest.mark.usefixtures("imagenet_env")
runner = CliRunner()
RANGES, N, RESOLUTION = 3, 10, 16
SAMPLER = "euler-steps2-cfg1.0-int0.0-1.0-shift1.0"      # 2 Euler steps, no guidance: a tiny network is enough


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """(folder of 3 seed ranges of 10 images of a random PixelDiT-T/4, a reference .npz of 10 random images)."""
    folder = tmp_path_factory.mktemp("seed-ranges")
    torch.manual_seed(0)
    model = build_network("PixelDiT-T/4")
    network = save_network(folder / "network-snapshot-0000005.safetensors", model.config, ema=model.state_dict(),
                           metadata={"resolution": RESOLUTION, "kimg": 5})
    outcome = runner.invoke(app, ["sample", str(network), "--out", str(folder / "samples"), "--n", str(N),
                                  "--sampler", SAMPLER, "--batch-size", "10", "--shard-size", "10",
                                  "--seed-ranges", str(RANGES)])
    assert outcome.exit_code == 0, outcome.output
    reference = folder / "tiny-16-reference.npz"      # <dataset>-<res>-...: the report's setting "tiny-16"
    np.savez(reference, arr_0=np.random.default_rng(0).integers(0, 256, (N, RESOLUTION, RESOLUTION, 3), np.uint8))
    return folder / "samples", reference


@pytest.fixture(scope="module")
def aggregate(sampled, tmp_path_factory):
    """`eval imagenet SAMPLES --seed-ranges`: the written aggregate record and the captured output."""
    samples, reference = sampled
    out = tmp_path_factory.mktemp("metrics") / "imagenet.json"
    outcome = runner.invoke(app, ["eval", "imagenet", str(samples), "--seed-ranges", "--ref", str(reference),
                                  "--weights", "offline", "--metrics", "fid,kid", "--out", str(out),
                                  "--label", "name=tiny-0"])
    assert outcome.exit_code == 0, outcome.output
    return json.loads(out.read_text()), outcome.output


def test_the_aggregate_is_mean_std_and_minimum_of_the_ranges_results(sampled, aggregate):
    samples, reference = sampled
    record, output = aggregate
    per_range = [json.loads((samples / f"range-{index}" / RANGE_RESULT).read_text()) for index in range(RANGES)]
    for metric in ("fid", "kid"):
        values = np.array([result["values"][metric] for result in per_range])
        assert record["values"][metric] == pytest.approx(values.mean(), rel=1e-12)
        assert record["values"][f"{metric}_std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert record["values"][f"{metric}_min"] == values.min()
    assert list(record["values"]) == ["fid", "fid_std", "fid_min", "kid", "kid_std", "kid_min"]   # KID's subset std
    assert [item["values"] for item in record["extra"]["seed_ranges"]] == [r["values"] for r in per_range]  # stays per range
    # each range's result is the evaluator's own on that range's samples, and records where its indices start
    direct = evaluate_imagenet(samples / "range-1" / "samples.npz", reference, metrics="fid,kid", weights="offline")
    assert per_range[1]["values"] == direct["values"]
    assert direct["sampler"]["first_index"] == N            # a range scored on its own says where it starts, too
    assert [result["sampler"]["first_index"] for result in per_range] == [0, N, 2 * N]
    card = record["protocol"]["seed_ranges"]
    assert (card["count"], card["images"], card["first_indices"]) == (RANGES, N, [0, N, 2 * N])
    assert "ddof = 1" in card["std"] and "EDM2" in card["min"]
    assert {key: value for key, value in record["protocol"].items() if key != "seed_ranges"} == per_range[0]["protocol"]
    assert "first_index" not in record["sampler"] and record["run"]["name"] == "tiny-0"
    assert "mean over 3 seed ranges of 10 images" in " ".join(output.split())


def test_the_folder_must_hold_disjoint_ranges_of_one_sampling(sampled, tmp_path):
    samples, _ = sampled
    folder = tmp_path / "ranges"
    shutil.copytree(samples, folder)
    assert [item.first_index for item in find_seed_ranges(folder)] == [0, N, 2 * N]
    shutil.copytree(folder / "range-0", folder / "copy-of-0")
    with pytest.raises(ImageNetEvalError, match="overlaps"):
        find_seed_ranges(folder)
    shutil.rmtree(folder / "copy-of-0")
    sidecar = folder / "range-2" / "samples.json"
    card = json.loads(sidecar.read_text())
    card["settings"]["sampler"] = "heun-2"
    sidecar.write_text(json.dumps(card))
    with pytest.raises(ImageNetEvalError, match=r"different settings \(sampler\)"):
        find_seed_ranges(folder)
    for index in (1, 2):
        shutil.rmtree(folder / f"range-{index}")
    with pytest.raises(ImageNetEvalError, match="need at least 2"):
        find_seed_ranges(folder)


def test_compare_tells_a_mean_over_ranges_from_one_run(sampled, aggregate, tmp_path):
    samples, _ = sampled
    record, _ = aggregate
    write_json_atomic(tmp_path / "mean.json", record)
    outcome = runner.invoke(app, ["compare", str(samples / "range-0" / RANGE_RESULT), str(tmp_path / "mean.json"),
                                  "--json", "--explain"])
    report = json.loads(outcome.stdout)
    assert outcome.exit_code == EXIT_CAVEAT
    [difference] = [entry for entry in report["differences"] if entry["field"] == "seed ranges"]
    assert (difference["a"], difference["b"], difference["verdict"]) == (1, RANGES, "comparable with caveat")
    assert "--seed-ranges" in difference["explain"]["reason"]
    # the mean against one range; kid_std (a spread over ranges vs KID's over subsets) is not set beside its namesake
    assert [metric["metric"] for metric in report["metrics"]] == ["fid", "kid"]
    [indices] = [entry for entry in report["differences"] if entry["field"] == "first sample index"]
    assert (indices["a"], indices["b"], indices["verdict"]) == (0, [0, N, 2 * N], "comparable")


def test_the_report_shows_the_spread_over_ranges_labelled_as_such(aggregate, tmp_path):
    record, _ = aggregate
    write_json_atomic(tmp_path / "results" / "metrics" / "tiny-0" / "0000005" / "euler-2" / "imagenet.json", record)
    plan = build_report(tmp_path / "results")
    table = next(table for table in plan.tables if table.name == "main-tiny-16")
    [row] = [row for row in table.rows if row[table.columns.index("Origin")].text == "measured"]
    fid = row[table.columns.index("FID")]
    values = record["values"]
    assert fid.text == f"{values['fid']:.2f} ± {values['fid_std']:.2f}" and fid.value == values["fid"]
    [note] = [table.notes[mark] for mark in fid.marks]
    assert note.startswith("mean ± std over 3 seed ranges of 10 samples each") and "not a bootstrap" in note
    page = (plan.out_dir / "index.html").read_text()
    assert f"± {values['fid_std']:.4g} (std over 3 seed ranges, min {values['fid_min']:.4g})" in page


def test_dry_run_lists_the_ranges_and_scores_nothing(sampled, tmp_path):
    samples, reference = sampled
    out = tmp_path / "imagenet.json"
    outcome = runner.invoke(app, ["eval", "imagenet", str(samples), "--seed-ranges", "--ref", str(reference),
                                  "--weights", "offline", "--out", str(out), "--dry-run"])
    assert outcome.exit_code == 0, outcome.output
    plan = json.loads(outcome.stdout)
    assert [(item["first_index"], item["count"]) for item in plan["seed_ranges"]] == [(0, N), (N, N), (2 * N, N)]
    assert plan["samples"]["source"] == str(samples / "range-0" / "samples.npz")     # the plan of the first range
    assert not out.exists()
