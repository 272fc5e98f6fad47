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
