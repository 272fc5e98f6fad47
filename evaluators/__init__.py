"""Benchmark evaluators behind one registry and one result format."""
from pixeldit.infra import torchvision_shim  # noqa: F401  (before torch-fidelity / open_clip import torchvision)
