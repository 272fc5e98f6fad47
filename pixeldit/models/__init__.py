"""PixelDiT models: registry, construction, weights I/O, official-checkpoint import and FLOP counting."""
from pixeldit.models.pixeldit import (ABLATION_LADDER, PixelDiT, PixelDiT_models, PixelDiTConfig, build_model,
                                      model_config)

__all__ = ["ABLATION_LADDER", "PixelDiT", "PixelDiT_models", "PixelDiTConfig", "build_model", "model_config"]
from pixeldit.models.io import load_network, load_weights_into, read_network_header, save_network  # noqa: E402
from pixeldit.models.official import from_official_state_dict, import_official_checkpoint  # noqa: E402

__all__ += ["load_network", "load_weights_into", "read_network_header", "save_network",
            "from_official_state_dict", "import_official_checkpoint"]
