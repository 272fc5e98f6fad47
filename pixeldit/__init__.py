"""pixeldit-bench: PixelDiT models, training, sampling and reporting."""
from pixeldit.infra import torchvision_shim  # noqa: F401  (must run before anything imports torchvision)

__version__ = "0.1.0"
