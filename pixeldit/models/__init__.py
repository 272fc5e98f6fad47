"""Models of every family (PixelDiT, latent DiT/SiT, PixelDiT-T2I) and the autoencoders: one registry, network
files, official-checkpoint import and FLOP counting. Imports only `pixeldit.infra` and itself."""
from pixeldit.models.io import load_network, load_weights_into, read_network_header, save_network
from pixeldit.models.latent_dit import LatentDiT, LatentDiTConfig
from pixeldit.models.official import from_official_state_dict, import_official_checkpoint
from pixeldit.models.pixeldit import ABLATION_LADDER, PixelDiT, PixelDiTConfig
from pixeldit.models.registry import FAMILIES, MODELS, build_network, family_of, model_config, models_in
from pixeldit.models.t2i import PixelDiTT2I, PixelDiTT2IConfig
from pixeldit.models.t2i_official import load_t2i_checkpoint

__all__ = ["load_network", "load_weights_into", "read_network_header", "save_network", "LatentDiT", "LatentDiTConfig",
           "from_official_state_dict", "import_official_checkpoint", "ABLATION_LADDER", "PixelDiT", "PixelDiTConfig",
           "FAMILIES", "MODELS", "build_network", "family_of", "model_config", "models_in", "PixelDiTT2I",
           "PixelDiTT2IConfig", "load_t2i_checkpoint"]
