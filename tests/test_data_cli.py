"""`pixeldit-bench data prepare|info`, mounted the way pixeldit/cli.py mounts it."""
import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pixeldit.cli.data import app as data_app

runner = CliRunner()
cli = typer.Typer()
cli.add_typer(data_app, name="data")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "d32"
    result = runner.invoke(cli, ["data", "prepare", "digits32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "train 1,297, reference 500" in result.output
    return out


def test_info_prints_summary_and_verifies(digits):
    result = runner.invoke(cli, ["data", "info", str(digits)])
    assert result.exit_code == 0, result.output
    assert "1,797 at 32x32" in result.output and "checksums: all 2 files match" in result.output


def test_info_fails_on_a_damaged_label_file(tmp_path):
    out = tmp_path / "d32"
    assert runner.invoke(cli, ["data", "prepare", "digits32", "--out", str(out)]).exit_code == 0
    labels = out / "labels.npy"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 1
    labels.write_bytes(bytes(data))
    result = runner.invoke(cli, ["data", "info", str(out)])
    assert result.exit_code == 1
    assert "labels.npy" in result.output and "--overwrite" in result.output


def test_prepare_refuses_an_existing_dataset_and_a_wrong_resolution(digits):
    result = runner.invoke(cli, ["data", "prepare", "digits32", "--out", str(digits)])
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = runner.invoke(cli, ["data", "prepare", "digits32", "--out", str(digits), "--res", "64"])
    assert result.exit_code == 1 and "--res 32" in result.output


def test_folder_dry_run_writes_nothing_and_res_is_required(tmp_path):
    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(src / "a.png")
    out = tmp_path / "out"
    result = runner.invoke(cli, ["data", "prepare", str(src.parent), "--out", str(out), "--res", "8", "--dry-run"])
    assert result.exit_code == 0 and "1 classes, 1 files" in result.output
    assert not out.exists()
    result = runner.invoke(cli, ["data", "prepare", str(src.parent), "--out", str(out)])
    assert result.exit_code == 1 and "--res is required" in result.output
    result = runner.invoke(cli, ["data", "prepare", str(src.parent), "--out", str(out), "--res", "8"])
    assert result.exit_code == 0, result.output
    assert "1 at 8x8" in result.output
