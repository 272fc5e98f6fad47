"""PixelDiT models: registry, construction, weights I/O, official-checkpoint import and FLOP counting."""
from pixeldit.models.pixeldit import (ABLATION_LADDER, PixelDiT, PixelDiT_models, PixelDiTConfig, build_model,
                                      model_config)

__all__ = ["ABLATION_LADDER", "PixelDiT", "PixelDiT_models", "PixelDiTConfig", "build_model", "model_config"]
from pixeldit.models.io import load_network, load_weights_into, read_network_header, save_network  # noqa: E402
from pixeldit.models.official import from_official_state_dict, import_official_checkpoint  # noqa: E402

__all__ += ["load_network", "load_weights_into", "read_network_header", "save_network",
            "from_official_state_dict", "import_official_checkpoint"]
from pixeldit.models.t2i import PixelDiT_T2I_models, build_t2i_model  # noqa: E402
from pixeldit.models.t2i_official import load_t2i_checkpoint  # noqa: E402

__all__ += ["PixelDiT_T2I_models", "build_t2i_model", "load_t2i_checkpoint"]
