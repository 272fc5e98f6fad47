"""`eval imagenet` under a real torchrun (2 CPU processes, gloo): each rank extracts its share of the batches,
the shares are gathered, and the metric values and cached features equal one process's bit for bit; so do the
statistics streamed by the ranks and added in rank order (a tiny DINOv2 with more images than dimensions)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_dinov2_registrations, write_tiny_dinov2_weights

from pixeldit.data.digits import digits32_images

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("imagenet_env")]

METRICS = "fid,sfid,precision,recall,kid"


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
TINY_DINOV2_CLI = str(Path(__file__).parent / "tiny_dinov2_cli.py")


def _eval(command: list[str], samples, reference, cache, out, env, metrics=METRICS, extra=()):
    done = subprocess.run([*command, "eval", "imagenet", str(samples), "--ref", str(reference), "--metrics", metrics,
                           "--batch-size", "8", "--weights", "offline", "--cache-dir", str(cache), "--out", str(out),
                           *extra], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_two_processes_give_the_values_and_features_one_process_gives(tmp_path):
    images = digits32_images()[0]
    np.savez(tmp_path / "samples.npz", arr_0=images[:20])         # batches of 8, 8, 4: rank 0 takes one,
    np.savez(tmp_path / "reference.npz", arr_0=images[300:320])   # rank 1 two (unequal shares)
    # one intra-op thread in every process, as torchrun gives each: the CPU features are the same bits at any
    # thread count (test_imagenet_inception.py), the metrics' BLAS arithmetic need not be
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one, _ = _eval([sys.executable, "-m", "pixeldit.cli"], tmp_path / "samples.npz", tmp_path / "reference.npz",
                   tmp_path / "cache-one", tmp_path / "one.json", env)
    torchrun = [*TORCHRUN, "-m", "pixeldit.cli", "--"]
    two, printed = _eval(torchrun, tmp_path / "samples.npz", tmp_path / "reference.npz", tmp_path / "cache-two",
                         tmp_path / "two.json", env)

    assert two["values"] == one["values"] and all(value is not None for value in one["values"].values())
    extraction = two["extra"]["feature_extraction"]
    assert extraction["samples"]["processes"] == extraction["reference"]["processes"] == 2
    assert printed.count("result written to") == 1                 # rank 0 reports, rank 1 stays quiet
    for name in ("samples", "reference"):
        key = one["extra"]["feature_extraction"][name]["key"]
        assert extraction[name]["key"] == key
        for layer in ("pool3", "spatial"):
            cached = [np.load(tmp_path / cache / "features" / key / f"{layer}.npy") for cache in ("cache-one", "cache-two")]
            assert cached[0].shape[0] == 20
            np.testing.assert_array_equal(cached[1], cached[0])
    assert len(list((tmp_path / "cache-two" / "metrics").glob("*.json"))) == 1   # one memo, written by rank 0

    again, _ = _eval(torchrun, tmp_path / "samples.npz", tmp_path / "reference.npz", tmp_path / "cache-two",
                     tmp_path / "again.json", env)
    assert again["values"] == one["values"] and again["extra"]["cache"]["metrics"] == "hit"


def test_two_processes_stream_the_statistics_one_process_streams(tmp_path, monkeypatch):
    """44 samples and 40 reference digits through a 32-d tiny DINOv2 in batches of 8: every rank sums its batches
    (rank 0 three, rank 1 three, the last one partial), the sums are added in rank order, and the FD, the cached
    sums and every other value equal one process's bit for bit."""
    images = digits32_images()[0]
    np.savez(tmp_path / "samples.npz", arr_0=images[:44])
    np.savez(tmp_path / "reference.npz", arr_0=images[300:340])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}    # imagenet_env's PIXELDIT_WEIGHTS
    for table, key, entry in tiny_dinov2_registrations().values():
        monkeypatch.setitem(table, key, entry)
    write_tiny_dinov2_weights()
    runs = {}
    for name, command in (("one", [sys.executable, TINY_DINOV2_CLI]), ("two", [*TORCHRUN, TINY_DINOV2_CLI])):
        runs[name], _ = _eval(command, tmp_path / "samples.npz", tmp_path / "reference.npz", tmp_path / f"cache-{name}",
                              tmp_path / f"{name}.json", env, metrics="kid", extra=("--features", "inception,dinov2"))
    one, two = runs["one"], runs["two"]
    assert two["values"] == one["values"] and one["values"]["fd_dinov2"] > 0
    extraction = {name: run["extra"]["extractors"]["dinov2"]["feature_extraction"] for name, run in runs.items()}
    assert extraction["two"]["samples"]["processes"] == 2
    assert extraction["two"]["samples"]["statistics"] == {"features": "streamed float64 sums (n > d)"}
    for part in ("samples", "reference"):
        key = extraction["one"][part]["key"]
        sums = [np.load(tmp_path / f"cache-{name}" / "features" / key / "features.stats.npy") for name in runs]
        np.testing.assert_array_equal(sums[1], sums[0])
