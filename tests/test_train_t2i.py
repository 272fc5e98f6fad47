"""Text-to-image training on captioned class data: captions and their cache, text dropout, smoke run, exact
kill-and-resume on the tiny preset (PixelDiT-T2I-T/4 with the real all-MiniLM-L6-v2 encoder)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixeldit.data.captions import CaptionEmbeddings, cached_caption_embeddings, class_captions, class_prompt
from pixeldit.models.io import read_network_header
from pixeldit.train import TrainConfig, caption_choice, train

REPO = Path(__file__).resolve().parents[1]
PRESET = "digits32-t2i-t4-smoke"


def test_digit_captions():
    captions = class_captions("digits")
    assert len(captions) == 10 and len({len(row) for row in captions}) == 1
    assert class_prompt("digits", 7) == "a handwritten digit seven" and "7" in " ".join(captions[7])
    with pytest.raises(KeyError, match="known: digits"):
        class_captions("letters")


def test_pick_uses_the_null_embedding_where_text_is_dropped():
    tokens = torch.arange(10 * 2 * 3 * 4, dtype=torch.float32).view(10, 2, 3, 4)
    embeddings = CaptionEmbeddings(tokens, torch.ones(10, 2, 3, dtype=torch.long), torch.full((1, 3, 4), -1.0),
                                   torch.tensor([[1, 0, 0]]), "test", "digits")
    picked, mask = embeddings.pick(torch.tensor([3, 3, 9]), torch.tensor([0, 1, 1]), torch.tensor([False, False, True]))
    assert torch.equal(picked[0], tokens[3, 0]) and torch.equal(picked[1], tokens[3, 1])
    assert torch.equal(picked[2], torch.full((3, 4), -1.0)) and mask[2].tolist() == [1, 0, 0]


def test_caption_choice_is_seeded_per_step_and_leaves_the_step_randomness_alone():
    config = TrainConfig.from_preset(PRESET)
    first = caption_choice(config, 5, range(0, 16, 2), 4)
    assert torch.equal(first, caption_choice(config, 5, range(0, 16, 2), 4))
    assert torch.equal(first, caption_choice(config, 5, range(16), 4)[::2])   # a rank's slice of the global batch
    assert not torch.equal(caption_choice(config, 6, range(16), 4), caption_choice(config, 5, range(16), 4))


def test_caption_cache_is_made_once_and_refuses_another_encoder(tmp_path):
    path = tmp_path / "captions.safetensors"
    embeddings = cached_caption_embeddings(path, "digits", "all-minilm-l6-v2", 16)
    assert embeddings.tokens.shape == (10, 4, 16, 384) and embeddings.null_tokens.shape == (1, 16, 384)
    stamp = path.stat().st_mtime_ns
    cached_caption_embeddings(path, "digits", "all-minilm-l6-v2", 16)
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="delete it"):
        cached_caption_embeddings(path, "digits", "tiny-gemma2", 16)


def test_t2i_settings_are_checked():
    with pytest.raises(ValueError, match="text-conditioned"):
        TrainConfig.from_preset(PRESET, text=None)
    with pytest.raises(ValueError, match="needs a T2I model"):
        TrainConfig.from_preset(PRESET, model="PixelDiT-T/4")
    with pytest.raises(ValueError, match="unset ablation, repa"):
        TrainConfig.from_preset(PRESET, repa={"encoder": "tiny-random", "align_layer": 1, "weight": 0.5})


def test_smoke_training_writes_a_t2i_snapshot_that_records_its_encoder(tiny_dataset, tmp_path):
    config = TrainConfig.from_preset(PRESET, dataset=str(tiny_dataset), resolution=16, lr=1e-3, log_every=8)
    snapshot = train(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    model_config, metadata, present = read_network_header(snapshot)
    assert metadata["family"] == "pixeldit-t2i" and model_config.name == "PixelDiT-T2I-T/4"
    assert model_config.text_max_length == 16 and present == ["ema", "net"]
    assert metadata["text"] == {"encoder": "all-minilm-l6-v2", "captions": "digits"}
    assert (tmp_path / "run" / "captions.safetensors").is_file()


def _train(dataset, out):
    args = [PRESET, "--dataset", str(dataset), "--kimg", "2", "--out", str(out), "--set", "resolution=16",
            "--set", "log_every=2", "--set", "deterministic=true"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pixeldit.cli", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical_to_an_uninterrupted_run(tiny_dataset, tmp_path):
    straight = _train(tiny_dataset, tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    killed = _train(tiny_dataset, tmp_path / "killed")
    state = tmp_path / "killed" / "training-state-0000001.pt"
    deadline = time.time() + 600
    while not state.exists() and time.time() < deadline:   # kill after the first state, mid-way to the second
        time.sleep(0.05)
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "network-snapshot-0000002.safetensors").exists(), "killed too late to test resume"
    stamp = (tmp_path / "killed" / "captions.safetensors").stat().st_mtime_ns
    resumed = _train(tiny_dataset, tmp_path / "killed")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resumed from training-state-0000001.pt" in output
    assert (tmp_path / "killed" / "captions.safetensors").stat().st_mtime_ns == stamp, "the encoder ran again"

    expected = load_file(tmp_path / "straight" / "network-snapshot-0000002.safetensors")
    again = load_file(tmp_path / "killed" / "network-snapshot-0000002.safetensors")
    assert expected.keys() == again.keys()
    for key in expected:
        assert torch.equal(expected[key], again[key]), key
