"""Sampling to ADM .npz: per-index determinism, shards, kill-and-resume, merge checks, guard rails, CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from safetensors.torch import save_file
from typer.testing import CliRunner

import pixeldit.infra.files
from pixeldit import sample as sampling
from pixeldit.cli import sample as sampling_cli
from pixeldit.cli.console import EXIT_BAD_INPUT, EXIT_CHECK_FAILED
from pixeldit.infra.files import sha256_file
from pixeldit.infra.images import quantize
from pixeldit.infra.runs import resolve_network
from pixeldit.infra.shards import parse_shard_ids
from pixeldit.models import build_network
from pixeldit.models.io import save_network
from pixeldit.sample import (
    class_labels,
    generate,
    merge_shards,
    plan_sampling,
    sample_noise,
    sample_shards,
)
from pixeldit.samplers import Sampler

SAMPLER = Sampler("ab2", 3, cfg_scale=2.0)  # guided at t = 1/3 and 2/3, not at t = 0
N, RESOLUTION, CLASSES = 20, 16, 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two cores are shared by parallel test runs; one thread avoids oversubscription and keeps kernels fixed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> Path:
    """A PixelDiT-T/4 network file (random weights; the zero-initialised output layers made non-zero)."""
    torch.manual_seed(0)
    model = build_network("PixelDiT-T/4")
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(std=0.05)
    path = tmp_path_factory.mktemp("run") / "network-snapshot-0000005.safetensors"
    return save_network(path, model.config, ema=model.state_dict(), metadata={"resolution": RESOLUTION, "kimg": 5})


@pytest.fixture(scope="module")
def reference_dir(network, tmp_path_factory) -> Path:
    """One complete run: 5 shards of 4, merged."""
    out = tmp_path_factory.mktemp("reference")
    sample_shards(network, out, N, SAMPLER, seed=7, shard_size=4, batch_size=4, merge=True)
    return out


@pytest.fixture
def copy_of_reference(reference_dir, tmp_path) -> Path:
    out = tmp_path / "samples"
    shutil.copytree(reference_dir, out)
    (out / "samples.npz").unlink()
    return out


def merged(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "samples.npz") as data:
        return {key: data[key] for key in data.files}


class ElementwiseModel(torch.nn.Module):
    """Stand-in whose output for a sample cannot depend on the rest of the batch."""

    num_classes = CLASSES

    def forward(self, x, t, y):
        return torch.tanh(x) * (1 - t.view(-1, 1, 1, 1)) + 0.05 * y.view(-1, 1, 1, 1).float()


# ------------------------------------------------------------------------------------------------
# Per-index randomness, labels, quantisation


def test_noise_depends_only_on_seed_and_index():
    together = sample_noise(3, [5, 9, 11], (3, 4, 4))
    assert torch.equal(together[1], sample_noise(3, [9], (3, 4, 4))[0])
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(together[0], sample_noise(4, [5], (3, 4, 4))[0])


def test_labels_are_index_mod_classes():
    assert class_labels(range(8, 13), 10).tolist() == [8, 9, 0, 1, 2]
    assert np.bincount(class_labels(range(50), 10)).tolist() == [5] * 10


def test_quantize_conventions():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert quantize(x, "round")[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]   # 127.5 -> 128, 191.25 -> 191
    assert quantize(x, "floor")[0, 0, :, 0].tolist() == [0, 0, 127, 191, 255, 255]
    assert quantize(x).shape == (1, 1, 6, 3) and quantize(x).dtype == np.uint8
    with pytest.raises(ValueError, match="round, floor"):
        quantize(x, "nearest")


def test_generate_is_identical_for_any_batch_size():
    model = ElementwiseModel()
    runs = [generate(model, range(3, 15), SAMPLER, 1, CLASSES, 8, batch_size, "cpu") for batch_size in (1, 5, 12)]
    for images, labels in runs[1:]:
        assert np.array_equal(images, runs[0][0]) and np.array_equal(labels, runs[0][1])
    subset, _ = generate(model, [9, 10], SAMPLER, 1, CLASSES, 8, 2, "cpu")
    assert np.array_equal(subset, runs[0][0][6:8])


def test_generate_real_model_agrees_across_batch_sizes_up_to_kernel_rounding(network):
    """The transformer's CPU kernels may round differently per batch size; outputs stay within one level."""
    from pixeldit.models.io import load_network

    model, _ = load_network(network)
    one, _ = generate(model, range(6), SAMPLER, 0, CLASSES, RESOLUTION, 1, "cpu")
    six, _ = generate(model, range(6), SAMPLER, 0, CLASSES, RESOLUTION, 6, "cpu")
    assert np.abs(one.astype(int) - six.astype(int)).max() <= 1
    assert one.std() > 10  # real images, not a constant


def test_bf16_autocast_stays_close_to_fp32(network):
    from pixeldit.models.io import load_network

    model, _ = load_network(network)
    fp32, _ = generate(model, range(4), SAMPLER, 0, CLASSES, RESOLUTION, 4, "cpu")
    bf16, _ = generate(model, range(4), SAMPLER, 0, CLASSES, RESOLUTION, 4, "cpu", autocast_bf16=True)
    difference = np.abs(fp32.astype(int) - bf16.astype(int))
    assert 0 < difference.max() and difference.mean() < 2


def test_non_finite_samples_are_refused():
    class Exploding(ElementwiseModel):
        def forward(self, x, t, y):
            return torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match="non-finite values for samples 0..1"):
        generate(Exploding(), range(2), SAMPLER, 0, CLASSES, 8, 2, "cpu")


# ------------------------------------------------------------------------------------------------
# Shards, resume, merge


def test_merged_npz_is_adm_format(reference_dir):
    arrays = merged(reference_dir)
    assert arrays["arr_0"].shape == (N, RESOLUTION, RESOLUTION, 3) and arrays["arr_0"].dtype == np.uint8
    assert arrays["arr_1"].tolist() == class_labels(range(N), CLASSES).tolist()
    with zipfile.ZipFile(reference_dir / "samples.npz") as archive:
        assert sorted(archive.namelist()) == ["arr_0.npy", "arr_1.npy"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    record = json.loads((reference_dir / "samples.json").read_text())
    assert record["sha256"] == sha256_file(reference_dir / "samples.npz") and record["count"] == N
    assert record["settings"]["sampler"] == SAMPLER.key and len(record["shards"]) == 5
    assert (reference_dir / "samples-grid.png").is_file()


def test_any_shard_split_and_process_split_is_bit_identical(network, reference_dir, tmp_path):
    """Shards of 8 (batches of 4), and two 'processes' filling alternate shards, reproduce the reference run."""
    sample_shards(network, tmp_path / "eights", N, SAMPLER, seed=7, shard_size=8, batch_size=4, merge=True)
    assert np.array_equal(merged(tmp_path / "eights")["arr_0"], merged(reference_dir)["arr_0"])
    split = tmp_path / "split"
    first = sample_shards(network, split, N, SAMPLER, seed=7, shard_size=4, shard_ids=[0, 2, 4], batch_size=4)
    second = sample_shards(network, split, N, SAMPLER, seed=7, shard_size=4, shard_ids=[1, 3], batch_size=4)
    assert len(first["written"]) == 3 and len(second["written"]) == 2
    merge_shards(split)
    assert np.array_equal(merged(split)["arr_0"], merged(reference_dir)["arr_0"])


def test_samples_record_the_networks_size_and_compute(network, reference_dir):
    """samples.json carries what the report plots: params, GFLOPs per forward, training and sampling compute."""
    from pixeldit.models.flops import count_flops

    summary = json.loads((reference_dir / "samples.json").read_text())["network"]["summary"]
    model = build_network("PixelDiT-T/4")
    forward = count_flops("PixelDiT-T/4", RESOLUTION)
    assert summary["params"] == sum(p.numel() for p in model.parameters()) and summary["type"] == "pixel"
    assert summary["gflops"] == pytest.approx(forward / 1e9) and summary["gflops_convention"] == "2flops_per_mac"
    # ab2, 3 steps, guided at 2 of them: 5 forward passes per image; 3 passes per training image at 5 kimg
    assert summary["sample_gflops_per_image"] == pytest.approx(5 * forward / 1e9)
    assert summary["kimg"] == 5 and summary["train_pflops"] == pytest.approx(3 * forward * 5000 / 1e15)


def test_x_prediction_network_is_sampled_through_its_implied_velocity(network, tmp_path):
    """A snapshot recording prediction='x' (JiT-style) is integrated with v = (x_hat - x_t) / (1 - t), not as v."""
    from pixeldit import flow
    from pixeldit.models.io import load_network

    model, metadata = load_network(network)
    x_network = save_network(tmp_path / "x" / "network-snapshot-0000005.safetensors", model.config,
                             ema=model.state_dict(), metadata={"resolution": RESOLUTION, "prediction": "x"})
    sample_shards(x_network, tmp_path / "out", CLASSES, SAMPLER, seed=7, shard_size=CLASSES, batch_size=CLASSES,
                  merge=True)
    indices = range(CLASSES)
    expected, _ = generate(flow.VelocityFromPrediction(model, "x"), indices, SAMPLER, 7, CLASSES, RESOLUTION, CLASSES,
                           torch.device("cpu"))
    as_velocity, _ = generate(model, indices, SAMPLER, 7, CLASSES, RESOLUTION, CLASSES, torch.device("cpu"))
    assert np.array_equal(merged(tmp_path / "out")["arr_0"], expected)
    assert not np.array_equal(expected, as_velocity)


def test_kill_and_resume_leaves_no_gap_or_duplicate(network, reference_dir, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    real_generate = sampling.generate
    calls = []

    def dies_on_third_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the job is killed mid-shard
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(sampling, "generate", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        sample_shards(network, out, N, SAMPLER, seed=7, shard_size=4, batch_size=4)
    monkeypatch.setattr(sampling, "generate", real_generate)
    assert len(list(out.glob("shard-*.npz"))) == 2
    # A shard cut short by a crash (half a file, stale sidecar) and a temp file left by the killed writer.
    shutil.copy(reference_dir / ".shards" / "shard-0000012-0000015.json", out / ".shards")
    (out / "shard-0000012-0000015.npz").write_bytes((reference_dir / "shard-0000012-0000015.npz").read_bytes()[:500])
    (out / ".shard-0000008-0000011.npz.abc.tmp").write_bytes(b"partial")

    result = sample_shards(network, out, N, SAMPLER, seed=7, shard_size=4, batch_size=4, merge=True)
    assert result["skipped"] == ["shard-0000000-0000003.npz", "shard-0000004-0000007.npz"]
    assert result["written"] == ["shard-0000008-0000011.npz", "shard-0000012-0000015.npz", "shard-0000016-0000019.npz"]
    assert np.array_equal(merged(out)["arr_0"], merged(reference_dir)["arr_0"])
    assert np.array_equal(merged(out)["arr_1"], merged(reference_dir)["arr_1"])


def test_rerun_skips_complete_shards_and_redoes_a_corrupt_one(network, copy_of_reference):
    target = copy_of_reference / "shard-0000004-0000007.npz"
    corrupted = bytearray(target.read_bytes())
    corrupted[-100] ^= 0xFF
    target.write_bytes(bytes(corrupted))
    result = sample_shards(network, copy_of_reference, N, SAMPLER, seed=7, shard_size=4, batch_size=4)
    assert result["written"] == ["shard-0000004-0000007.npz"] and len(result["skipped"]) == 4


def test_other_settings_in_the_same_directory_are_refused(network, copy_of_reference):
    with pytest.raises(ValueError, match=r"shard-0000000-0000003.json was sampled with other settings.*seed"):
        sample_shards(network, copy_of_reference, N, SAMPLER, seed=8, shard_size=4, batch_size=4)


def _sidecar(npz_path: Path) -> Path:
    return npz_path.parent / ".shards" / npz_path.with_suffix(".json").name


def _edit_sidecar(npz_path: Path, **changes) -> None:
    sidecar_path = _sidecar(npz_path)
    sidecar = json.loads(sidecar_path.read_text())
    for key, value in changes.items():
        if key == "settings":
            sidecar["settings"] = {**sidecar["settings"], **value}
        else:
            sidecar[key] = value
    sidecar_path.write_text(json.dumps(sidecar))


def test_merge_refuses_a_gap(copy_of_reference):
    (copy_of_reference / "shard-0000004-0000007.npz").unlink()
    _sidecar(copy_of_reference / "shard-0000004-0000007.npz").unlink()
    with pytest.raises(ValueError, match=r"gap: indices 4\.\.7 are missing after shard-0000000-0000003"):
        merge_shards(copy_of_reference)


def test_merge_command_exits_3_when_shards_do_not_tile(copy_of_reference):
    """A gap is a failed check (exit 3), a corrupt sidecar bad input (exit 1): scripts can tell "not done yet"
    from "broken"."""
    (copy_of_reference / "shard-0000004-0000007.npz").unlink()
    _sidecar(copy_of_reference / "shard-0000004-0000007.npz").unlink()
    result = CliRunner().invoke(sampling_cli.app, ["merge", str(copy_of_reference)])
    assert result.exit_code == EXIT_CHECK_FAILED and "gap: indices 4..7" in result.output, result.output
    _sidecar(copy_of_reference / "shard-0000008-0000011.npz").write_text("{not json")
    result = CliRunner().invoke(sampling_cli.app, ["merge", str(copy_of_reference)])
    assert result.exit_code == EXIT_BAD_INPUT and "not readable JSON" in result.output, result.output


def test_merge_refuses_overlapping_shards(copy_of_reference):
    """A shard from a run with another --shard-size claims indices 2..5."""
    source = copy_of_reference / "shard-0000004-0000007.npz"
    stray = copy_of_reference / "shard-0000002-0000005.npz"
    shutil.copy(source, stray)
    shutil.copy(_sidecar(source), _sidecar(stray))
    _edit_sidecar(stray, first=2, last=5)
    with pytest.raises(ValueError, match=r"shard-0000002-0000005 overlaps shard-0000000-0000003: "
                                         r"indices 2\.\.3"):
        merge_shards(copy_of_reference)


def test_merge_refuses_mixed_settings(copy_of_reference):
    _edit_sidecar(copy_of_reference / "shard-0000008-0000011.npz", settings={"seed": 99})
    with pytest.raises(ValueError, match=r"shard-0000008-0000011 and shard-0000000-0000003 "
                                         r".*different settings.*seed"):
        merge_shards(copy_of_reference)


def test_merge_refuses_corrupt_or_unfinished_shards(copy_of_reference):
    target = copy_of_reference / "shard-0000016-0000019.npz"
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(ValueError, match="shard-0000016-0000019.npz does not match the sha256"):
        merge_shards(copy_of_reference)
    _sidecar(target).unlink()
    with pytest.raises(ValueError, match="shard-0000016-0000019.npz has no readable sidecar"):
        merge_shards(copy_of_reference)


def test_merge_with_n_needs_a_shard_boundary_and_full_coverage(copy_of_reference):
    with pytest.raises(ValueError, match="cross n=10"):
        merge_shards(copy_of_reference, n=10)
    with pytest.raises(ValueError, match=r"gap: indices 20\.\.39"):
        merge_shards(copy_of_reference, n=40)
    assert np.load(merge_shards(copy_of_reference, n=20, png=True))["arr_0"].shape[0] == 20
    assert len(list((copy_of_reference / "png").glob("*.png"))) == 20


# ------------------------------------------------------------------------------------------------
# Guard rails


def test_run_directory_resolves_to_latest_snapshot(network, tmp_path):
    for kimg in (5, 120, 40):
        shutil.copy(network, tmp_path / f"network-snapshot-{kimg:07d}.safetensors")
    assert resolve_network(tmp_path).name == "network-snapshot-0000120.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no network-snapshot"):
        resolve_network(empty)


def test_plan_refuses_bad_requests(network):
    with pytest.raises(ValueError, match="resolution 18 is not divisible by the patch size 4"):
        plan_sampling(network, N, 4, resolution=18)
    with pytest.raises(ValueError, match="n=25 is not a multiple of the model's 10 classes.*n=30"):
        plan_sampling(network, 25, 4)
    with pytest.raises(ValueError, match=r"shard ids \[5\] do not exist: this run has 5 shards"):
        plan_sampling(network, N, 4, shard_ids=[0, 5])
    assert plan_sampling(network, N, 4).shard_ids == (0, 1, 2, 3, 4)


def test_torchrun_ranks_take_every_world_size_th_shard(network, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert plan_sampling(network, N, 4).shard_ids == (1, 3)
    assert plan_sampling(network, N, 4, shard_ids=[0, 2, 3]).shard_ids == (2,)


def test_wrong_kind_of_checkpoint_is_refused(tmp_path):
    not_safetensors = tmp_path / "model.safetensors"
    not_safetensors.write_text("this is not a checkpoint")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        plan_sampling(not_safetensors, N, 4)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a pixeldit-bench network file"):
        plan_sampling(foreign, N, 4)


def test_too_little_disk_is_refused_before_sampling(network, tmp_path, monkeypatch):
    monkeypatch.setattr(pixeldit.infra.files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 10**6 - 100, 100))
    with pytest.raises(OSError, match=r"sampling 5 shards needs about 0\.00 GB but .* has 0\.00 GB free"):
        sample_shards(network, tmp_path / "out", N, SAMPLER, seed=7, shard_size=4)
    assert not list((tmp_path / "out").glob("shard-*"))


def test_parse_shard_ids():
    assert parse_shard_ids("0,3,5-7") == [0, 3, 5, 6, 7]
    assert parse_shard_ids(None) is None
    with pytest.raises(ValueError, match="like '0,3,5-7'"):
        parse_shard_ids("0;3")


# ------------------------------------------------------------------------------------------------
# CLI

@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    """The sub-app mounted as pixeldit/cli.py mounts it."""
    root = typer.Typer()
    root.command("noop")(lambda: None)
    root.add_typer(sampling_cli.app, name="sample")
    return root


def test_cli_samples_merges_and_matches_the_library(cli, network, reference_dir, tmp_path):
    out = tmp_path / "cli"
    args = ["sample", str(network.parent), "--out", str(out), "--n", str(N), "--sampler", SAMPLER.key,
            "--seed", "7", "--batch-size", "4", "--shard-size", "4"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "5 shards written" in result.output
    assert np.array_equal(merged(out)["arr_0"], merged(reference_dir)["arr_0"])
    again = CliRunner().invoke(cli, args + ["--no-merge"])
    assert again.exit_code == 0 and "0 shards written, 5 already complete" in again.output


def test_cli_dry_run_prints_the_plan_and_writes_nothing(cli, network, tmp_path):
    result = CliRunner().invoke(cli, ["sample", "run", str(network), "--out", str(tmp_path / "dry"), "--n", "100",
                                      "--sampler", "paper-256", "--shard-size", "30", "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["sampler"] == "ab2-steps100-cfg2.75-int0.1-0.9-shift1.0" and plan["num_shards"] == 4
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize("extra, message", [
    (["--sampler", "paper-1024"], "unknown sampler 'paper-1024'"),
    (["--resolution", "18"], "not divisible by the patch size"),
    (["--quantization", "nearest"], "unknown --quantization"),
    (["--shards", "3-1"], "shard range '3-1' in '3-1' runs backwards; write it as '1-3'"),
    (["--n", "-10"], "n=-10: sample at least one image per class, e.g. n=10"),
])
def test_cli_reports_bad_input_clearly(cli, network, tmp_path, extra, message):
    result = CliRunner().invoke(cli, ["sample", str(network), "--out", str(tmp_path), "--n", "20", *extra])
    assert result.exit_code == 1 and message in " ".join(result.output.split())


def test_cli_under_torchrun_fills_this_ranks_share_and_leaves_merging(cli, network, reference_dir, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "rank1"
    result = CliRunner().invoke(cli, ["sample", str(network), "--out", str(out), "--n", str(N), "--sampler",
                                      SAMPLER.key, "--seed", "7", "--batch-size", "4", "--shard-size", "4",
                                      "--shards", "0-3"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("shard-*.npz")) == ["shard-0000004-0000007.npz", "shard-0000012-0000015.npz"]
    assert "sample merge" in result.output and not (out / "samples.npz").exists()
    for name in ("shard-0000004-0000007.npz", "shard-0000012-0000015.npz"):
        assert (out / name).read_bytes() == (reference_dir / name).read_bytes()


@pytest.mark.slow
def test_two_torchrun_processes_sample_the_bytes_one_process_samples(network, reference_dir, tmp_path):
    """Real torchrun, 2 processes on CPU: each rank fills its share of the shards, then one merge; every shard and
    the merged arrays equal the single-process run's, byte for byte. The `--` is the workflow launcher's: without
    it torchrun's parser refuses `--n` as an ambiguous abbreviation of its own options."""
    out = tmp_path / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    sample = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "pixeldit.cli", "--", "sample", str(network), "--out", str(out), "--n", str(N), "--sampler",
              SAMPLER.key, "--seed", "7", "--batch-size", "4", "--shard-size", "4", "--no-merge"]
    done = subprocess.run(sample, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    merge = subprocess.run([sys.executable, "-m", "pixeldit.cli", "sample", "merge", str(out)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert merge.returncode == 0, merge.stdout[-2000:] + merge.stderr[-2000:]
    shards = sorted(path.name for path in reference_dir.glob("shard-*.npz"))
    assert sorted(path.name for path in out.glob("shard-*.npz")) == shards and len(shards) == 5
    for name in shards:
        assert (out / name).read_bytes() == (reference_dir / name).read_bytes(), name
    for key, array in merged(reference_dir).items():
        np.testing.assert_array_equal(merged(out)[key], array)


def test_cli_presets_and_merge_dry_run(cli, reference_dir):
    presets = CliRunner().invoke(cli, ["sample", "presets", "--json"])
    assert presets.exit_code == 0 and "paper-512" in presets.output
    check = CliRunner().invoke(cli, ["sample", "merge", str(reference_dir), "--dry-run"])
    assert check.exit_code == 0 and json.loads(check.output)["count"] == N



# ------------------------------------------------------------------------------------------------
# Seed ranges


@pytest.fixture(scope="module")
def seed_ranges(cli, network, tmp_path_factory) -> Path:
    """`sample --seed-ranges 2` of N images with the reference run's settings."""
    out = tmp_path_factory.mktemp("seed-ranges")
    result = CliRunner().invoke(cli, ["sample", str(network), "--out", str(out), "--n", str(N), "--sampler",
                                      SAMPLER.key, "--seed", "7", "--batch-size", "4", "--shard-size", "4",
                                      "--seed-ranges", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("5 shards written") == 2
    return out


def test_seed_range_0_is_the_plain_run_byte_for_byte(seed_ranges, reference_dir):
    range_0 = seed_ranges / "range-0"
    files = sorted(path.relative_to(reference_dir) for path in reference_dir.rglob("*.npz"))
    assert files and files == sorted(path.relative_to(range_0) for path in range_0.rglob("*.npz"))
    for name in files:
        assert (range_0 / name).read_bytes() == (reference_dir / name).read_bytes(), name
    assert (range_0 / "samples.json").read_bytes() == (reference_dir / "samples.json").read_bytes()


def test_seed_ranges_take_disjoint_indices_of_one_longer_run(seed_ranges, reference_dir, network, tmp_path):
    """Range 1 holds sample indices [N, 2N): the images of one 2N run there, so no range repeats another's noise."""
    longer = tmp_path / "longer"
    sample_shards(network, longer, 2 * N, SAMPLER, seed=7, shard_size=4, batch_size=4, merge=True)
    range_1 = merged(seed_ranges / "range-1")
    np.testing.assert_array_equal(range_1["arr_0"], merged(longer)["arr_0"][N:])
    np.testing.assert_array_equal(range_1["arr_1"], merged(reference_dir)["arr_1"])     # still class-balanced
    assert not np.array_equal(range_1["arr_0"], merged(reference_dir)["arr_0"])
    settings = [json.loads((seed_ranges / f"range-{index}" / "samples.json").read_text())["settings"]
                for index in (0, 1)]
    assert "first_index" not in settings[0] and settings[1].pop("first_index") == N and settings[0] == settings[1]


def test_seed_ranges_dry_run_and_refusals(cli, network, tmp_path):
    args = ["sample", str(network), "--out", str(tmp_path / "dry"), "--n", str(N), "--sampler", SAMPLER.key]
    dry = CliRunner().invoke(cli, [*args, "--seed-ranges", "3", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert [(Path(item["out"]).name, item["first_index"], item["last_index"])
            for item in json.loads(dry.output)["seed_ranges"]] == [("range-0", 0, 19), ("range-1", 20, 39),
                                                                   ("range-2", 40, 59)]
    assert not (tmp_path / "dry").exists()
    one = CliRunner().invoke(cli, [*args, "--seed-ranges", "1"])
    assert one.exit_code == EXIT_BAD_INPUT and "at least 2" in one.output
    with pytest.raises(ValueError, match="start at 0"):
        sample_shards(network, tmp_path / "negative", N, SAMPLER, seed=7, shard_size=4, first_index=-N)
