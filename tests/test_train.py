"""Training: objective, time sampling, label dropout, REPA, EMA, schedules, exact resume, DDP equivalence."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixeldit import flow
from pixeldit.repa import RepaProjector, match_token_grid, repa_loss, tiny_random_encoder
from pixeldit.train import TrainConfig, ema_decay, scheduled, train

REPO = Path(__file__).resolve().parents[1]


def tiny_config(dataset, **overrides):
    values = dict(dataset=str(dataset), resolution=16, batch_size=16, total_kimg=1, snapshot_kimg=1, state_kimg=1,
                  log_every=4, deterministic=True)
    values.update(overrides)
    return TrainConfig.from_preset("digits32-t4-smoke", **values)


def test_interpolation_and_target_velocity():
    x, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    x_t, v = flow.interpolate(x, noise, t)
    torch.testing.assert_close(x_t[0], noise[0])          # t = 0 is noise
    torch.testing.assert_close(x_t[3], x[3])              # t = 1 is data
    torch.testing.assert_close(x_t[1], 0.25 * x[1] + 0.75 * noise[1])
    torch.testing.assert_close(v, x - noise)
    # an x-predicting network that returns the data exactly implies the exact velocity
    torch.testing.assert_close(flow.velocity_from_output(x[1:3], x_t[1:3], t[1:3], "x"), v[1:3], atol=1e-5, rtol=1e-5)


def test_logit_normal_times_and_shift():
    t = flow.sample_timesteps(200_000, torch.Generator().manual_seed(0))
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item()) < 0.01 and abs(logit.std().item() - 1) < 0.01
    shifted = flow.sample_timesteps(200_000, torch.Generator().manual_seed(0), shift=3.0)
    torch.testing.assert_close(shifted, t / (t + (1 - t) * 3.0))
    assert shifted.median() < 0.3 < t.median()           # shift 3 moves times toward noise (t = 0)
    assert flow.time_shift(torch.tensor(0.5), 1.0).item() == 0.5


def test_label_dropout_rate(tiny_dataset):
    config = tiny_config(tiny_dataset, batch_size=64)
    from pixeldit.train import step_randomness
    drops = torch.cat([step_randomness(config, step, range(64), torch.device("cpu"))[1] for step in range(300)])
    assert abs(drops.float().mean().item() - 0.1) < 0.01
    y = flow.drop_labels(torch.arange(4), torch.tensor([True, False, True, False]), null_class=10)
    assert y.tolist() == [10, 1, 10, 3]


def test_repa_loss_with_a_tiny_encoder():
    encoder = tiny_random_encoder(embed_dim=32)
    images = torch.rand(2, 3, 32, 32)
    target = encoder(images)                              # 14*32/16 = 28 px -> 2x2 tokens
    assert target.shape == (2, 4, 32)
    projector = RepaProjector(hidden_size=16, encoder_dim=32)
    block_output = torch.randn(2, 64, 16, requires_grad=True)    # an 8x8 patch grid
    loss = repa_loss(block_output, projector, target)
    assert 0 < loss.item() < 2
    loss.backward()
    assert block_output.grad.abs().sum() > 0
    # identical features have zero loss; opposite ones the maximum 2
    tokens = torch.randn(1, 4, 8)
    assert match_token_grid(tokens, 1).shape == (1, 1, 8)
    identity = RepaProjector(8, 8)
    assert repa_loss(tokens, _Identity(), tokens).item() == pytest.approx(0, abs=1e-6)
    assert repa_loss(tokens, _Identity(), -tokens).item() == pytest.approx(2, abs=1e-6)
    assert sum(p.numel() for p in RepaProjector(1152, 768).parameters()) == pytest.approx(3.5e6, rel=0.05)
    del identity


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


def test_schedules_and_ema():
    assert scheduled(1e-4, [[90, 1e-5]], 89.9) == 1e-4
    assert scheduled(1e-4, [[90, 1e-5]], 90) == 1e-5
    assert scheduled(1.0, [[10, 0.5], [5, 0.8]], 7) == 0.8
    fixed = TrainConfig.from_preset("imagenet256-xl")
    assert ema_decay(fixed, 256, 0) == 0.9999
    short = TrainConfig.from_preset("digits32-s4")   # half-life 0.5 kimg, ramp-up 0.1
    assert ema_decay(short, 64, 10_000_000) == pytest.approx(0.5 ** (64 / 500))
    assert ema_decay(short, 64, 1000) == pytest.approx(0.5 ** (64 / 100))


def test_imagenet_presets_follow_the_paper():
    config = TrainConfig.from_preset("imagenet256-xl")
    assert (config.model, config.batch_size, config.lr, config.grad_clip, config.ema_decay) == ("PixelDiT-XL/16", 256, 1e-4, 1.0, 0.9999)
    assert config.repa == {"encoder": "dinov2-vitb14", "align_layer": 8, "weight": 0.5}
    assert config.total_kimg == round(320 * 1281.167) and config.time_shift == 1.0 and config.label_dropout == 0.1
    assert TrainConfig.from_preset("imagenet512-xl").time_shift == 3.0
    with pytest.raises(KeyError, match="unknown training preset"):
        TrainConfig.from_preset("imagenet1024")
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_preset("digits32-s4", learning_rate=1)


def test_training_reduces_the_loss_and_writes_the_run_directory(tiny_dataset, tmp_path):
    snapshot = train(tiny_config(tiny_dataset, total_kimg=2, lr=1e-3), tmp_path / "run", progress=False)
    assert snapshot.name == "network-snapshot-0000002.safetensors"
    records = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert records[-1]["kimg"] >= 2 and {"loss", "grad_norm", "lr", "images_per_second", "peak_memory_mib"} <= set(records[0])
    assert records[-1]["loss"] < records[0]["loss"]
    assert sorted(p.name for p in (tmp_path / "run").glob("training-state-*.pt")) == [
        "training-state-0000001.pt", "training-state-0000002.pt"]
    # rerunning the finished run does nothing
    before = snapshot.stat().st_mtime_ns
    train(tiny_config(tiny_dataset, total_kimg=2, lr=1e-3), tmp_path / "run", progress=False)
    assert snapshot.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="started with other settings"):
        train(tiny_config(tiny_dataset, total_kimg=2, lr=5e-4), tmp_path / "run", progress=False)


def test_training_reports_progress_each_tenth_of_its_budget(tiny_dataset, tmp_path, capsys):
    """The embedded preset (digits32-s4, here on 16x16 images for 1 kimg) prints one line per 10% to stdout
    and log.txt, as a Snakemake log sees it: kimg / total, images/s, loss, ETA."""
    config = TrainConfig.from_preset("digits32-s4", dataset=str(tiny_dataset), resolution=16, total_kimg=1,
                                     snapshot_kimg=1, state_kimg=1)
    train(config, tmp_path / "run")
    pattern = re.compile(r"train: ([\d.]+)/1 kimg \((\d+)%\), [\d.]+ img/s, loss \d+\.\d{4}, ETA \d+m\d\ds")
    printed = [match for line in capsys.readouterr().out.splitlines() if (match := pattern.search(line))]
    # one line as each tenth of the budget is reached (batch 32 does not divide it: the line comes at the step
    # that reaches it)
    assert [int(float(match.group(1)) * 10) for match in printed] == list(range(1, 11)), printed
    assert printed[-1].group(0).endswith("ETA 0m00s")
    assert len(pattern.findall((tmp_path / "run" / "log.txt").read_text())) == 10


def test_repa_training_step_runs_with_the_tiny_encoder(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, repa={"encoder": "tiny-random", "align_layer": 1, "weight": 0.5})
    train(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert all(r["repa_loss"] > 0 for r in records)
    state = torch.load(next((tmp_path / "run").glob("training-state-*.pt")), weights_only=True)
    assert state["projector"] is not None


def _run_training(args, env_extra=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "pixeldit.cli", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _train_args(dataset, out, kimg=3):
    return ["digits32-t4-smoke", "--dataset", str(dataset), "--kimg", str(kimg), "--out", str(out),
            "--set", "resolution=16", "--set", "batch_size=16", "--set", "snapshot_kimg=1", "--set", "state_kimg=1",
            "--set", "log_every=2", "--set", "deterministic=true"]


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical_to_an_uninterrupted_run(tiny_dataset, tmp_path):
    reference = _run_training(_train_args(tiny_dataset, tmp_path / "straight"))
    assert reference.wait(timeout=600) == 0, reference.stdout.read()

    killed = _run_training(_train_args(tiny_dataset, tmp_path / "killed"))
    state = tmp_path / "killed" / "training-state-0000001.pt"
    deadline = time.time() + 600
    while not state.exists() and time.time() < deadline:   # kill somewhere after the first state, mid-epoch
        time.sleep(0.05)
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "network-snapshot-0000003.safetensors").exists(), "killed too late to test resume"
    resumed = _run_training(_train_args(tiny_dataset, tmp_path / "killed"))
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resumed from training-state-" in output

    straight = load_file(tmp_path / "straight" / "network-snapshot-0000003.safetensors")
    again = load_file(tmp_path / "killed" / "network-snapshot-0000003.safetensors")
    assert straight.keys() == again.keys()
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "a resumed run must not log a step twice"


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tiny_dataset, tmp_path):
    single = _run_training(_train_args(tiny_dataset, tmp_path / "one", kimg=1))
    assert single.wait(timeout=600) == 0, single.stdout.read()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "pixeldit.cli", "train", *_train_args(tiny_dataset, tmp_path / "two", kimg=1)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    one = [json.loads(line) for line in (tmp_path / "one" / "stats.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
