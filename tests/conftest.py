"""Test-wide settings: offline hubs, the torchvision shim before any library imports it, fixed seeds."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pixeldit  # noqa: E402,F401  (installs the torchvision shim first)
import pytest  # noqa: E402
import torch  # noqa: E402

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
