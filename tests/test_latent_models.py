"""Latent DiT/SiT: exact parameter counts of the published models, shapes, AdaLN-Zero and weights files."""
import dataclasses

import pytest
import torch

from pixeldit.models import MODELS, build_network, model_config, models_in
from pixeldit.models.latent_dit import LatentDiT, LatentDiTConfig
from pixeldit.models.layers import sincos_2d_position_embedding


def meta_params(name, **overrides) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_network(name, **overrides).parameters())


def test_published_parameter_counts():
    # DiT's count includes the frozen sin-cos pos_embed Parameter (256 x 1152 = 294,912).
    assert meta_params("DiT-XL/2") == 675_129_632
    # SiT's official model keeps learn_sigma=True (8 output channels, half discarded): same count.
    assert meta_params("SiT-XL/2") == 675_129_632
    # Without the sigma channels the final Linear loses 1152 x 16 + 16 = 18,448 parameters.
    assert meta_params("SiT-XL/2", learn_sigma=False) == 675_129_632 - 18_448 == 675_111_184
    assert meta_params("DiT-B/2") == 130_512_416
    assert meta_params("DiT-S/2") == 32_963_360


def tiny(**overrides) -> LatentDiTConfig:
    return model_config("LatentDiT-S/1", depth=2, hidden_size=32, num_heads=2, **overrides)


@pytest.mark.parametrize("overrides", [dict(), dict(patch_size=2, learn_sigma=True, time_scale=1000.0)])
def test_forward_shape_and_zero_init(overrides):
    model = LatentDiT(tiny(**overrides))
    x = torch.randn(3, 4, 8, 8)
    out = model(x, torch.rand(3), torch.tensor([0, 5, 10]))          # 10 = null class
    assert out.shape == x.shape                                       # velocity only, also with learn_sigma
    assert torch.count_nonzero(out) == 0                              # AdaLN-Zero + zeroed final layer


def perturbed(model: LatentDiT) -> LatentDiT:
    """Leave the zero init, as training would, so outputs depend on every input."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def test_output_depends_on_time_and_label():
    model = perturbed(LatentDiT(tiny(learn_sigma=True)))
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    a = model(x, torch.tensor([0.2, 0.2]), y)
    assert not torch.allclose(a, model(x, torch.tensor([0.7, 0.7]), y))
    assert not torch.allclose(a, model(x, torch.tensor([0.2, 0.2]), torch.tensor([3, 4])))


def test_position_table_is_dit_sincos_and_frozen():
    model = LatentDiT(tiny(patch_size=2))
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed[0], sincos_2d_position_embedding(32, 4, 4).float())


def test_bad_input_is_refused():
    model = LatentDiT(tiny())
    with pytest.raises(ValueError, match="expects latents of shape"):
        model(torch.randn(1, 4, 16, 16), torch.rand(1), torch.tensor([0]))
    with pytest.raises(ValueError, match="not divisible"):
        tiny(patch_size=3)
    with pytest.raises(KeyError, match="registered"):
        build_network("DiT-XXL/2")


def test_config_round_trip_and_save_network(tmp_path):
    from safetensors.torch import load_file

    from pixeldit.models.io import save_network

    config = tiny()
    assert LatentDiTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown LatentDiT config keys"):
        LatentDiTConfig.from_dict({**config.to_dict(), "pixel_depth": 2})
    model = perturbed(LatentDiT(config))
    path = save_network(tmp_path / "net.safetensors", config, net=model.state_dict(), ema=model.state_dict())
    stored = load_file(str(path))
    reloaded = LatentDiT(config)
    reloaded.load_state_dict({k[4:]: v for k, v in stored.items() if k.startswith("ema.")})
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 2])
    assert torch.count_nonzero(model(x, t, y))
    torch.testing.assert_close(reloaded(x, t, y), model(x, t, y), rtol=0, atol=0)


def test_registry_names_match_entries():
    assert all(config.name == name for name, config in models_in("latent-dit").items())
    assert dataclasses.replace(MODELS["DiT-XL/2"], time_scale=1.0, name="SiT-XL/2") == MODELS["SiT-XL/2"]


def test_load_network_builds_a_latent_dit(tmp_path):
    from pixeldit.models.io import load_network, save_network

    model = perturbed(LatentDiT(tiny()))
    path = save_network(tmp_path / "net.safetensors", model.config, net=model.state_dict(), ema=model.state_dict())
    loaded, metadata = load_network(path)
    assert isinstance(loaded, LatentDiT) and loaded.config == model.config
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 2])
    torch.testing.assert_close(loaded(x, t, y), model(x, t, y), rtol=0, atol=0)
