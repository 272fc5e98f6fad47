"""cmmd's CLIP ViT-L/14 @ 336 embedding path (evaluators/imagenet/clip.py) against cmmd's own code on seeded weights.

tests/fixtures/clip_equivalence/ holds the embeddings google-research cmmd + scenic's CLIP computed for ten images
under seeded weights of a tiny CLIP of the same architecture (README.md there has the script). Weights and images
are rebuilt here from the rules in meta.json and their digests checked, so only numbers are committed. The PIL
resize tests need Pillow only; the network tests need transformers (the full stack).
"""
import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from evaluators.imagenet import clip, evaluate_imagenet
from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.extractor_metrics import cmmd
from evaluators.imagenet.extractors import CLIP_EXTRACTOR, EXTRACTORS, metric_names
from pixeldit.data.digits import digits32_images
from pixeldit.infra import weights as registry

FIXTURE = Path(__file__).parent / "fixtures" / "clip_equivalence"
META = json.loads((FIXTURE / "meta.json").read_text())
TINY = META["config"]
needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="transformers is in the full stack only")
needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                   reason="scikit-image (the fixture's photos) is in the full stack only")


def seeded_state(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """meta.json's weights rule: sorted names, one numpy generator, float32 normal noise per tensor; LayerNorm
    weights 1 + 0.1·noise, everything else 0.1·noise."""
    rng = np.random.default_rng(seed)
    state = {}
    for name in sorted(template):
        noise = rng.standard_normal(tuple(template[name].shape), dtype=np.float32)
        near_one = name.endswith(".weight") and "norm" in name.rsplit(".", 2)[-2]
        state[name] = torch.from_numpy(1 + 0.1 * noise if near_one else 0.1 * noise)
    return state


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        array = state[name].numpy()
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}\n".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def fixture_images() -> list[np.ndarray]:
    """meta.json's ten images: four digits32 images, six scikit-image photos; sha256 checked."""
    import skimage.data


    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(),
              np.ascontiguousarray(skimage.data.coffee().transpose(1, 0, 2)), skimage.data.astronaut()[:336, :420]]
    images = list(digits32_images()[0][:4]) + photos
    assert [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images] == \
        META["images"]["sha256"]
    return images


def to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]                # (1, 3, H, W)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The fixture's seeded tiny weights (Hugging Face layout) as a safetensors file, digest checked."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        template = clip.build_network(TINY).state_dict()
    state = seeded_state(template, META["weights"]["seed"])
    assert tensor_digest(state) == META["weights"]["tensor_sha256"]
    path = tmp_path_factory.mktemp("clip") / "clip_seeded_tiny.safetensors"
    save_file(state, str(path))
    return path


# --------------------------------------------------------------------------------------------- equivalence

@needs_transformers
@needs_skimage
def test_features_and_cmmd_match_cmmds_code(tiny_checkpoint):
    images = fixture_images()
    extractor = clip.CLIPFeatures(clip.load_official(tiny_checkpoint, TINY), "cpu")
    ours = np.concatenate([extractor(image[None])[clip.LAYER] for image in images])            # (10, 64)
    golden = np.load(FIXTURE / "features.npz")["features"]
    assert ours.shape == golden.shape == tuple(META["features"]["shape"]) and ours.dtype == np.float32
    assert np.abs(ours - golden).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)                      # cmmd normalises

    half = len(ours) // 2
    ours_cmmd, golden_cmmd = cmmd(ours[:half], ours[half:]), cmmd(golden[:half], golden[half:])
    assert abs(ours_cmmd - golden_cmmd) <= 1e-6 * golden_cmmd
    # cmmd's own value is float32 JAX arithmetic on kernel means near 1 (5e-5 relative from float64 here)
    assert abs(golden_cmmd - META["cmmd_halves"]["value"]) <= 1e-3 * golden_cmmd

    digits = np.stack(images[:4])                                                                # one batch of four
    np.testing.assert_allclose(extractor(digits)[clip.LAYER], ours[:4], rtol=0, atol=1e-6)


@needs_skimage
def test_crop_and_resize_give_cmmds_bytes():
    """The torch crop + PIL-exact resize reproduce what cmmd's io_util made of each fixture image, byte for byte."""
    for image, expected in zip(fixture_images(), META["images"]["resized_336_uint8_sha256"]):
        square = clip.pil_bicubic_resize(clip.centre_square(to_chw(image)), (336, 336))
        assert square.dtype == torch.uint8
        assert hashlib.sha256(square[0].permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest() == expected


# --------------------------------------------------------------------------------------------- preprocessing

SIZES = [((1, 1), (336, 336)), ((5, 7), (336, 336)), ((32, 32), (336, 336)), ((17, 300), (336, 336)),
         ((600, 601), (336, 336)), ((1000, 999), (336, 336)), ((336, 336), (335, 337)), ((64, 48), (10, 37)),
         ((3, 2000), (7, 300)), ((64, 48), (10, 48)), ((64, 48), (64, 20))]


@pytest.mark.parametrize(("size", "target"), SIZES)
def test_resize_equals_pillow_bicubic(size, target):
    """Up, down, odd factors, 1-pixel and very unequal sizes, one axis unchanged, both pass orders (Pillow 13 runs the
    vertical pass first for (64, 48) -> (10, 37) and (336, 336) -> (335, 337)); noise and a 0/255 checkerboard
    (overshoot, clipping)."""
    rng = np.random.default_rng(sum(size) + sum(target))
    noise = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    rows, cols = np.indices(size)
    checks = np.repeat((((rows // 3 + cols // 2) % 2) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    for image in (noise, checks):
        expected = np.asarray(Image.fromarray(image).resize((target[1], target[0]), Image.Resampling.BICUBIC))
        ours = clip.pil_bicubic_resize(to_chw(image), target)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("size", [(40, 70), (70, 40), (9, 8), (336, 500), (336, 336)])
def test_preprocess_is_cmmds_crop_resize_and_normalisation(size):
    """cmmd's io_util: centred square box ((w - l) // 2, (h - l) // 2), PIL BICUBIC to 336, / 255, CLIP mean / std."""
    image = np.random.default_rng(size[0]).integers(0, 256, (*size, 3), dtype=np.uint8)
    h, w = size
    side = min(h, w)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    pil = Image.fromarray(image).crop(box).resize((336, 336), resample=Image.BICUBIC)
    x = np.asarray(pil).astype(np.float32) / 255.0
    expected = (x - np.asarray(clip.CLIP_MEAN, dtype=np.float32)) / np.asarray(clip.CLIP_STD, dtype=np.float32)
    ours = clip.cmmd_preprocess(to_chw(image))
    assert ours.shape == (1, 3, 336, 336) and ours.dtype == torch.float32
    np.testing.assert_array_equal(ours[0].permute(1, 2, 0).numpy(), expected)


# --------------------------------------------------------------------------------------------- network and weights

@needs_transformers
def test_real_config_is_vit_l14_336_vision_tower_and_projection():
    """24 blocks of width 1024 (MLP 4096) on 24×24 patches of 14 + class token, pre/post LayerNorm, 1024→768."""
    with torch.device("meta"):
        network = clip.build_network()
    width, patch, grid, depth, mlp, projection = 1024, 14, 336 // 14, 24, 4096, 768
    embeddings = width + 3 * patch * patch * width + (grid * grid + 1) * width      # class, patch conv (no bias), positions
    block = 4 * (width * width + width) + 2 * 2 * width + (width * mlp + mlp) + (mlp * width + width)
    expected = embeddings + 2 * 2 * width + depth * block + width * projection      # + pre/post LN, projection (no bias)
    assert expected == 304_293_888
    assert sum(p.numel() for p in network.parameters()) == expected
    config = network.config
    assert (config.hidden_act, config.layer_norm_eps, config.num_attention_heads) == ("quick_gelu", 1e-5, 16)
    assert config.hidden_size // config.num_attention_heads == 64                  # scenic's vision_head_dim


@needs_transformers
def test_checkpoint_layouts(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(tiny_checkpoint))
    reference = clip.load_official(tiny_checkpoint, TINY).state_dict()
    # a full CLIPModel file (.bin, torch.load weights_only): text tower, text projection, logit scale, old buffer skipped
    full = {**state, "text_model.embeddings.token_embedding.weight": torch.zeros(10, 4),
            "text_projection.weight": torch.zeros(4, 4), "logit_scale": torch.tensor(2.6592),
            "vision_model.embeddings.position_ids": torch.arange(577)[None]}
    torch.save(full, tmp_path / "pytorch_model.bin")
    loaded = clip.load_official(tmp_path / "pytorch_model.bin", TINY).state_dict()
    assert all(torch.equal(loaded[name], reference[name]) for name in reference)

    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ImageNetEvalError, match=r"not a CLIP ViT-L/14-336 checkpoint in the Hugging Face layout.*"
                                                r"missing vision_model\.embeddings\.class_embedding.*unexpected weight"):
        clip.load_official(tmp_path / "other.pth")

    openai = {name.replace("vision_model.", "visual."): tensor for name, tensor in state.items()}
    torch.save(openai, tmp_path / "openai.pt")
    with pytest.raises(ImageNetEvalError, match=r"missing vision_model\.embeddings\.class_embedding, .*\(\d+ in all\); "
                                                r"unexpected visual\.embeddings\.class_embedding"):
        clip.load_official(tmp_path / "openai.pt", TINY)

    torch.save({**state, "visual_projection.weight": torch.zeros(32, 128)}, tmp_path / "narrow.bin")
    with pytest.raises(ImageNetEvalError, match=r"does not fit .*visual_projection\.weight \(32, 128\) \(expected \(64, 128\)\)"):
        clip.load_official(tmp_path / "narrow.bin", TINY)

    torch.save(torch.zeros(3), tmp_path / "tensor.bin")
    with pytest.raises(ImageNetEvalError, match="holds a Tensor, not a state dict"):
        clip.load_official(tmp_path / "tensor.bin", TINY)
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ImageNetEvalError, match="not a readable"):
        clip.load_official(tmp_path / "junk.bin", TINY)


@needs_transformers
def test_features_refuse_other_inputs(tiny_checkpoint):
    network = clip.load_official(tiny_checkpoint, TINY)
    with pytest.raises(ImageNetEvalError, match="takes 336×336 inputs, not 224×224"):
        clip.CLIPFeatures(network, "cpu", size=224)
    extractor = clip.CLIPFeatures(network, "cpu")
    assert extractor.device == torch.device("cpu")
    with pytest.raises(ImageNetEvalError, match="uint8 \\(B, H, W, 3\\)"):
        extractor(np.zeros((1, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ImageNetEvalError, match="uint8 \\(B, H, W, 3\\)"):
        extractor(np.zeros((1, 3, 32, 32), dtype=np.uint8))


def test_weights_entry_is_the_hugging_face_file_and_absent_offline(imagenet_env):
    entry = registry.get_entry("clip-vit-l14-336")
    assert entry is clip.CLIP_VITL14_336
    assert entry.url == "https://huggingface.co/openai/clip-vit-large-patch14-336/resolve/main/pytorch_model.bin"
    assert entry.licence.startswith("MIT") and len(entry.sha256) == 64
    assert not registry.path_of(entry.name).is_file()
    with pytest.raises(registry.MissingWeightsError, match="pixeldit-bench weights fetch clip-vit-l14-336"):
        registry.resolve(entry.name)

    from pixeldit.cli import app

    result = CliRunner().invoke(app, ["weights", "fetch", "clip-vit-l14-336", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"would download {entry.url}" in " ".join(result.output.split())


def test_layer_is_the_extractor_registrys():
    from evaluators.imagenet import extractors

    assert clip.LAYER == extractors.LAYER


# --------------------------------------------------------------------------------------------- in the evaluator

@needs_transformers
@pytest.mark.usefixtures("imagenet_env")
def test_features_clip_gives_cmmd_of_the_embeddings(tiny_checkpoint, monkeypatch, tmp_path):
    """`eval imagenet --features clip` with `clip` pointed at the tiny seeded network: cmmd_clip is the CMMD of its
    embeddings of the samples and the reference images, nothing else is added, and the card names cmmd's path."""

    assert metric_names("clip") == {"cmmd": "cmmd_clip"}
    test_weights = registry.WeightFile(name="clip-tiny-test", url="file:///nonexistent/clip-tiny-test.safetensors",
                                       filename="clip-tiny-test.safetensors", licence="test", description="tiny CLIP")
    monkeypatch.setitem(registry.WEIGHTS, test_weights.name, test_weights)
    monkeypatch.setitem(EXTRACTORS, "clip", dataclasses.replace(CLIP_EXTRACTOR, weights=test_weights.name, config=TINY,
                                                               dim=TINY["projection_dim"]))
    path = registry.path_of(test_weights.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny_checkpoint.read_bytes())

    images = digits32_images()[0]
    np.savez(tmp_path / "samples.npz", arr_0=images[:10])
    np.savez(tmp_path / "reference.npz", arr_0=images[400:410])
    record = evaluate_imagenet(tmp_path / "samples.npz", tmp_path / "reference.npz", metrics="kid",
                               weights="offline", features="clip", cache_dir=tmp_path / "cache")
    assert list(record["values"]) == ["kid", "kid_std", "cmmd_clip"]
    extractor = clip.CLIPFeatures(clip.load_official(tiny_checkpoint, TINY), "cpu")
    smp, ref = (extractor(part)[clip.LAYER] for part in (images[:10], images[400:410]))
    assert record["values"]["cmmd_clip"] == pytest.approx(cmmd(ref, smp), rel=1e-9)
    block = record["protocol"]["extractors"]["clip"]
    assert block["cmmd"]["sigma"] == 10 and "fd" not in block and block["card"]["dim"] == 64
    assert block["card"]["reproduces"].startswith("google-research/google-research cmmd")
