"""The project's DINOv2 ViT-L/14 feature path against the official dinov2 + EDM2 code on seeded weights.

tests/fixtures/dinov2_equivalence/ holds the official code's features of 16 seeded random images under seeded
random weights (README.md there has the script). The weights and images are rebuilt here from the rules in
meta.json, and their digests checked, so no weights are committed.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators.imagenet.dinov2 import DINOv2Features, dinov2_vitl14, edm2_preprocess, load_official
from evaluators.imagenet.metrics import frechet_distance
from evaluators.imagenet.statistics import FeatureStatistics

FIXTURE = Path(__file__).parent / "fixtures" / "dinov2_equivalence"
META = json.loads((FIXTURE / "meta.json").read_text())


def seeded_state(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """meta.json's weights rule: sorted names, one generator, randn per tensor; LayerNorm weights and LayerScale
    gammas 1 + 0.1·noise, everything else 0.02·noise."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in sorted(template):
        noise = torch.randn(template[name].shape, generator=generator)
        module = name.rsplit(".", 2)[-2] if name.count(".") else ""
        near_one = name.endswith(".gamma") or (name.endswith(".weight") and "norm" in module)
        state[name] = 1 + 0.1 * noise if near_one else 0.02 * noise
    return state


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(checkpoint path, images) rebuilt from meta.json, digests checked."""
    state = seeded_state(dinov2_vitl14().state_dict(), META["weights"]["seed"])
    assert tensor_digest(state) == META["weights"]["tensor_sha256"]
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_seeded_vitl14.pth"
    torch.save(state, path)
    spec = META["images"]
    images = np.random.default_rng(spec["seed"]).integers(0, 256, size=(spec["count"], spec["size"], spec["size"], 3),
                                                          dtype=np.uint8)
    assert hashlib.sha256(images.tobytes()).hexdigest() == spec["sha256"]
    return path, images


@pytest.mark.slow      # ViT-L/14 (300M parameters) on 16 images plus two 1024-d sqrtm: about 80 s on 2 CPU cores
def test_features_and_fd_match_the_official_code(seeded):
    path, images = seeded
    extractor = DINOv2Features(load_official(path), device="cpu")
    ours = np.concatenate([extractor(images[i:i + 8])["dinov2"] for i in range(0, len(images), 8)])   # (16, 1024)
    golden = np.load(FIXTURE / "features.npz")["features"]
    assert ours.shape == golden.shape == tuple(META["features"]["shape"]) and ours.dtype == np.float32
    assert np.abs(ours - golden).max() <= 1e-5

    half = len(ours) // 2
    first, second = FeatureStatistics(1024).update(ours[:half]), FeatureStatistics(1024).update(ours[half:])
    expected = META["fd_halves"]["value"]
    for route in ("sqrtm", "eigh"):
        fd = frechet_distance(first.mu(), first.sigma(), second.mu(), second.sigma(), route=route)
        assert abs(fd - expected) <= 1e-6 * expected, (route, fd, expected)


def test_preprocessing_is_edm2s_torch_resize():
    """float32 bicubic antialiased resize to 224 of the uint8 values, no clamp, then ImageNet mean / std."""
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 48), dtype=np.uint8))
    x = edm2_preprocess(images)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    resized = torch.nn.functional.interpolate(images.float(), size=(224, 224), mode="bicubic", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (resized / 255 - mean) / std, rtol=0, atol=0)


def test_a_checkpoint_of_another_layout_is_refused(tmp_path):
    from evaluators.imagenet.errors import ImageNetEvalError

    path = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ImageNetEvalError, match="not a DINOv2 ViT-L/14 checkpoint"):
        load_official(path)
