"""The whole report: plots written (valid PNG + SVG), skipped plots explained, index, CLI and --dry-run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pixeldit.cli.report import baselines_app, report
from pixeldit.report.build import build_report
from pixeldit.report.plots import read_leading_images

FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "report" / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results(tmp_path):
    """Fixture results plus sample archives (made here: binary files stay out of the repo)."""
    results = tmp_path / "results"
    shutil.copytree(FIXTURE_RESULTS, results)
    images = np.random.default_rng(0).integers(0, 256, size=(70, 32, 32, 3), dtype=np.uint8)
    for kimg in ("0000256", "0000512"):
        folder = results / "samples/pixeldit-s4-0" / kimg / "euler-50-cfg1.5"
        folder.mkdir(parents=True)
        np.savez(folder / "samples.npz", arr_0=images)
    (results / "samples/vanilla-s4-0").mkdir(parents=True)    # a run dir without samples yet
    return results


def _app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)   # mounted the way pixeldit/cli.py mounts them
    app.command("report")(report)
    app.add_typer(baselines_app, name="baselines")
    return app


def test_read_leading_images_reads_a_prefix(tmp_path):
    images = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "s.npz", arr_0=images)
        np.testing.assert_array_equal(read_leading_images(tmp_path / "s.npz", count=3), images[:3])
    np.savez(tmp_path / "f.npz", arr_0=images.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 NHWC"):
        read_leading_images(tmp_path / "f.npz")


def test_report_writes_tables_plots_and_index(results):
    plan = build_report(results)
    out = results / "report"
    names = {job.name for job in plan.plots}
    assert {"fid_vs_kimg-digits-32", "fid_vs_training_compute-digits-32", "fid_vs_guidance-digits-32",
            "fid_vs_gflops-imagenet-256",
            "fid_vs_gflops-digits-32", "loss_curves", "samples-pixeldit-s4-0"} <= names
    for name in names:
        png, svg = out / "plots" / f"{name}.png", out / "plots" / f"{name}.svg"
        assert png.stat().st_size > 0 and png.read_bytes()[:8] == PNG_SIGNATURE
        assert svg.stat().st_size > 0 and b"<svg" in svg.read_bytes()[:1000]
    for table in plan.tables:
        for extension in ("md", "tex", "csv"):
            assert (out / "tables" / f"{table.name}.{extension}").stat().st_size > 0
    index = (out / "report.md").read_text()
    assert "[tex](tables/main-imagenet-256.tex)" in index and "(plots/loss_curves.png)" in index
    assert "`samples-vanilla-s4-0`" in index   # skipped, with its reason
    assert [item.name for item in plan.skipped] == ["samples-vanilla-s4-0"]


def test_missing_inputs_skip_plots_with_reasons(tmp_path):
    results = tmp_path / "results"
    (results / "metrics").mkdir(parents=True)
    plan = build_report(results, dry_run=True)
    reasons = {item.name: item.reason for item in plan.skipped}
    assert set(reasons) == {"fid_vs_kimg", "fid_vs_training_compute", "fid_vs_guidance", "loss_curves", "samples"}
    assert "stats.jsonl" in reasons["loss_curves"] and "samples.npz" in reasons["samples"]
    assert [job.name for job in plan.plots] == ["fid_vs_gflops-imagenet-256"]   # published points only
    assert [table.name for table in plan.tables] == ["main-imagenet-256", "main-imagenet-512", "t2i"]
    assert "published numbers" in plan.tables[0].caption and "measured" not in plan.tables[0].caption


def test_cli_report_dry_run_writes_nothing(results):
    outcome = CliRunner().invoke(_app(), ["report", "--results", str(results), "--dry-run"])
    assert outcome.exit_code == 0, outcome.output
    assert "main-digits-32" in outcome.output and "dry run: nothing written" in outcome.output
    assert not (results / "report").exists()


def test_cli_report_refuses_mixed_protocols_then_allows(results, tmp_path):
    path = results / "metrics/latent-s2-0/0000512/euler-50-cfg1.5/imagenet.json"
    record = json.loads(path.read_text())
    record["evaluator"]["version"] = "2"
    path.write_text(json.dumps(record))
    out = tmp_path / "out"
    refused = CliRunner().invoke(_app(), ["report", "--results", str(results), "--out", str(out)])
    assert refused.exit_code == 1
    assert "latent-s2-0" in refused.output and "evaluator.version" in refused.output
    assert not out.exists()
    allowed = CliRunner().invoke(_app(), ["report", "--results", str(results), "--out", str(out), "--allow-mixed",
                                          "--dry-run"])
    assert allowed.exit_code == 0, allowed.output
    assert "main-digits-32" in allowed.output


def test_cli_report_missing_results_dir(tmp_path):
    outcome = CliRunner().invoke(_app(), ["report", "--results", str(tmp_path / "nope")])
    assert outcome.exit_code == 1 and "does not exist" in outcome.output


def test_cli_baselines_list_filters_by_setting():
    outcome = CliRunner().invoke(_app(), ["baselines", "list", "--setting", "imagenet-512"], env={"COLUMNS": "200"})
    assert outcome.exit_code == 0, outcome.output
    assert "1.81" in outcome.output and "DeCo paper Table" in outcome.output
    assert "1.61" not in outcome.output and "FLUX" not in outcome.output
    unknown = CliRunner().invoke(_app(), ["baselines", "list", "--setting", "imagenet-64"])
    assert unknown.exit_code == 1 and "known settings" in unknown.output
