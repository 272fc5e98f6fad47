"""Test-wide settings: offline hubs, the torchvision shim before any library imports it, fixed seeds."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import pixeldit  # noqa: E402,F401  (installs the torchvision shim first)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="module")
def imagenet_env(tmp_path_factory):
    """Converted Inception weights and the feature cache in the session's temp dir, no torch.hub file."""
    root = tmp_path_factory.getbasetemp() / "imagenet"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELDIT_WEIGHTS", str(root / "weights"))
        patch.setenv("PIXELDIT_CACHE", str(root / "cache"))
        patch.setenv("TORCH_HOME", str(root / "torch"))
        yield root


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """64 random 16x16 images in 10 classes, in the project's dataset format (training tests)."""
    import numpy as np

    from pixeldit.infra.datasets import DatasetWriter

    out = tmp_path_factory.mktemp("data") / "tiny16"
    rng = np.random.default_rng(0)
    with DatasetWriter(out, resolution=16) as writer:
        for i in range(64):
            writer.add(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), i % 10)
        writer.finish({"name": "tiny16", "num_classes": 10, "class_names": [str(c) for c in range(10)],
                       "source": {"kind": "tests"}, "preprocessing": "random", "prepare_command": "tests/conftest.py"})
    return out


@pytest.fixture(scope="module")
def digit_sets(imagenet_env, tmp_path_factory):
    """(samples, reference) ADM .npz files: 60 real digits as samples, 40 disjoint ones as the reference."""
    import numpy as np

    from pixeldit.data.digits import digits32_images

    images = digits32_images()[0]
    folder = tmp_path_factory.mktemp("digit_sets")
    np.savez(folder / "samples.npz", arr_0=images[:60])
    np.savez(folder / "reference.npz", arr_0=images[200:240])
    return folder / "samples.npz", folder / "reference.npz"
