"""Batched T2I generation: GenEval / DPG / caption-set layouts, per-(prompt, sample) seeding independent of
shards and jobs, resume after a lost or changed file, and the completeness check."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.dpg.layout import check_layout
from evaluators.dpg.prompts import load_prompts
from evaluators.geneval.prompts import iter_samples
from pixeldit.models import build_network
from pixeldit.models.io import save_network
from pixeldit.samplers import get_sampler
from pixeldit.t2i_generate import finish_prompt_set, generate_prompt_set, load_prompt_set

SAMPLER = get_sampler("euler-steps2-cfg2.0-int0.0-1.0-shift1.0")   # cheap, and guided at every step


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """A random-init PixelDiT-T2I-T/4 for 8x8 images, reading the tiny Gemma2 stand-in's 32-d tokens."""
    torch.manual_seed(0)
    model = build_network("PixelDiT-T2I-T/4", text_dim=32, text_max_length=16)
    with torch.no_grad():   # the zero-initialised output layer would make every image the same grey
        model.final_linear.weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("net") / "t2i.safetensors"
    save_network(path, model.config, ema=model.state_dict(), metadata={"resolution": 8, "text": {"encoder": "tiny-gemma2"}})
    return path


def generate(network, out, prompts="digits", **kwargs):
    kwargs = {"samples_per_prompt": 3, "shard_size": 5, "batch_size": 3, **kwargs}
    return generate_prompt_set(network, out, prompts, SAMPLER, seed=7, device="cpu", **kwargs)


def test_caption_set_shards_merge_into_labelled_samples(network, tmp_path):
    result = generate(network, tmp_path / "a")
    assert result["written"] == ["shard-0000000-0000004.json", "shard-0000005-0000009.json"]
    card = json.loads(finish_prompt_set(tmp_path / "a").read_text())
    with np.load(tmp_path / "a" / "samples.npz") as data:
        images, labels = data["arr_0"], data["arr_1"]
    assert images.shape == (30, 8, 8, 3) and images.dtype == np.uint8 and card["count"] == 30
    assert labels.tolist() == np.repeat(np.arange(10), 3).tolist()
    assert len({image.tobytes() for image in images}) == 30, "every (prompt, sample) must get its own noise"


def test_images_do_not_depend_on_shard_size_order_or_batch(network, tmp_path):
    generate(network, tmp_path / "a")
    finish_prompt_set(tmp_path / "a")
    for shard in (4, 2, 0, 3, 1):   # other shards, filled out of order as independent jobs would
        generate(network, tmp_path / "b", shard_size=2, shard_ids=[shard])
    finish_prompt_set(tmp_path / "b")
    generate(network, tmp_path / "c", batch_size=1)
    finish_prompt_set(tmp_path / "c")
    a, b, c = (np.load(tmp_path / name / "samples.npz")["arr_0"] for name in "abc")
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).max() <= 1   # kernels may round differently per batch size


def test_rerun_skips_complete_shards_and_redoes_a_lost_or_changed_one(network, tmp_path):
    out = tmp_path / "run"
    generate(network, out)
    before = np.load(out / "shard-0000005-0000009.npz")["arr_0"]
    assert generate(network, out)["written"] == []
    (out / "shard-0000005-0000009.npz").unlink()
    assert generate(network, out)["written"] == ["shard-0000005-0000009.json"]
    assert np.array_equal(np.load(out / "shard-0000005-0000009.npz")["arr_0"], before)
    np.savez(out / "shard-0000000-0000004.npz", arr_0=np.zeros((15, 8, 8, 3), np.uint8), arr_1=np.zeros(15, np.int64))
    with pytest.raises(ValueError, match="rerun the same"):
        finish_prompt_set(out)
    assert generate(network, out)["written"] == ["shard-0000000-0000004.json"]
    finish_prompt_set(out)
    # other settings into the same folder redo every shard instead of mixing
    assert len(generate(network, out, samples_per_prompt=2)["written"]) == 2


def test_geneval_layout(network, tmp_path):
    out = tmp_path / "geneval"
    generate(network, out, prompts="geneval", samples_per_prompt=4, shard_size=2, shard_ids=[0], batch_size=4)
    samples = [sample for sample in iter_samples(out) if sample.name < "00002"]
    assert [s.name for s in samples] == [f"{p:05d}/samples/{j:04d}.png" for p in range(2) for j in range(4)]
    assert samples[0].metadata == load_prompt_set("geneval").items[0].metadata
    assert Image.open(samples[0].path).size == (8, 8)
    with pytest.raises(ValueError, match="not generated yet"):
        finish_prompt_set(out)


def test_dpg_layout(network, tmp_path):
    out = tmp_path / "dpg"
    generate(network, out, prompts="dpg", samples_per_prompt=4, shard_size=2, shard_ids=[0], batch_size=4)
    items = list(load_prompts())[:2]
    report = check_layout(out, items)
    assert report.ok and report.tile_size == 8 and sorted(report.found) == sorted(items)
    assert report.extra == []   # the shard sidecars are hidden from the scorer


def test_benchmarks_refuse_another_sample_count(network, tmp_path):
    with pytest.raises(ValueError, match="4 samples per prompt"):
        generate(network, tmp_path / "x", prompts="geneval", samples_per_prompt=2)


def test_a_class_conditional_network_is_refused(tmp_path):
    from pixeldit.models import build_network

    model = build_network("PixelDiT-T/4", num_classes=10)
    path = save_network(tmp_path / "c2i.safetensors", model.config, ema=model.state_dict(), metadata={"resolution": 8})
    with pytest.raises(ValueError, match="not a text-to-image one"):
        generate(path, tmp_path / "out")
