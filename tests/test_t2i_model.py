"""Text-to-image PixelDiT: exact size, equivalence with the upstream implementation, masks, time convention."""
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pixeldit.models import MODELS, build_network, model_config, models_in
from pixeldit.models.flops import count_flops, count_params
from pixeldit.models.t2i import DataTimeVelocity
from pixeldit.models.t2i_official import (
    extract_t2i_denoiser,
    from_official_t2i_state_dict,
    load_t2i_checkpoint,
    rename_official_t2i_key,
)
from pixeldit.samplers import Sampler


def _golden(fixtures_dir, name):
    tensors = load_file(f"{fixtures_dir}/official_t2i/{name}.safetensors")
    state = {key[len("state."):]: value for key, value in tensors.items() if key.startswith("state.")}
    return state, tensors


def test_parameter_count_equals_the_upstream_implementation():
    # Upstream PixDiT_T2I with t2i/configs/PixelDiT_1024px_pixel_diffusion_stage3.yaml, counted on the meta device.
    assert count_params("PixelDiT-T2I") == 1_302_470_787
    assert count_params("PixelDiT-T2I", pit_adaln_post_modulation=True) == 1_277_288_579


@pytest.mark.parametrize("variant", ["pre_modulation", "post_modulation"])
def test_converted_official_weights_reproduce_the_upstream_output(fixtures_dir, variant):
    state, golden = _golden(fixtures_dir, variant)
    model = from_official_t2i_state_dict(state).eval()
    assert model.config.pit_adaln_post_modulation == (variant == "post_modulation")
    mask = torch.ones(golden["text"].shape[:2], dtype=torch.long)
    with torch.no_grad():
        out = model(golden["x"], golden["t"], golden["text"], mask)
    assert (out - golden["out"]).abs().max().item() <= 1e-5


def _training_checkpoint(fixtures_dir, with_rng_state):
    state, golden = _golden(fixtures_dir, "pre_modulation")
    checkpoint = {"state_dict": {**{f"core.{k}": v for k, v in state.items()},
                                 "_repa_projector.0.weight": torch.zeros(4, 32)},
                  "state_dict_ema": {f"core.{k}": v + 1 for k, v in state.items()}, "epoch": 3}
    if with_rng_state:  # what upstream's save_checkpoint_ddp stores next to the weights
        checkpoint["rng_state"] = {"numpy": np.random.RandomState(0).get_state()}
    return checkpoint, state, golden


def test_released_checkpoint_format_loads_and_needs_trust_only_for_extra_pickles(fixtures_dir, tmp_path):
    checkpoint, _, golden = _training_checkpoint(fixtures_dir, with_rng_state=True)
    torch.save(checkpoint, tmp_path / "pixeldit_t2i_v1.pth")
    with pytest.raises(ValueError, match="trust"):
        load_t2i_checkpoint(tmp_path / "pixeldit_t2i_v1.pth")
    model = load_t2i_checkpoint(tmp_path / "pixeldit_t2i_v1.pth", trust_pickle=True)
    with torch.no_grad():
        out = model(golden["x"], golden["t"], golden["text"])
    assert (out - golden["out"]).abs().max().item() <= 1e-5

    checkpoint, state, _ = _training_checkpoint(fixtures_dir, with_rng_state=False)
    torch.save(checkpoint, tmp_path / "weights_only.pth")
    ema = load_t2i_checkpoint(tmp_path / "weights_only.pth", which="ema")
    torch.testing.assert_close(ema.patch_embedder.weight, state["s_embedder.proj.weight"] + 1, atol=0, rtol=0)


def test_unexpected_official_keys_are_refused(fixtures_dir):
    with pytest.raises(KeyError, match="unexpected key"):
        rename_official_t2i_key("y_embedder.embedding_table.weight")  # a class-conditional key
    checkpoint, _, _ = _training_checkpoint(fixtures_dir, with_rng_state=False)
    checkpoint["state_dict"]["text_refiner.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="text_refiner"):
        extract_t2i_denoiser(checkpoint)


def test_shapes_at_non_square_sizes_with_any_text_length():
    model = build_network("PixelDiT-T2I-T/4").eval()
    for (height, width), length in [((12, 20), 5), ((32, 16), 32), ((4, 4), 1)]:
        x = torch.randn(2, 3, height, width)
        mask = (torch.arange(length)[None] < torch.tensor([[length], [max(length // 2, 1)]])).long()
        out = model(x, torch.tensor([10.0, 900.0]), torch.randn(2, length, 384), mask)
        assert out.shape == x.shape and torch.isfinite(out).all()


def _perturbed(name, **overrides):
    model = build_network(name, **overrides).eval()
    torch.nn.init.normal_(model.final_linear.weight, std=0.1)  # zero at init: give the output some signal
    return model


def test_masked_padding_has_no_influence_and_unmasked_padding_does():
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500.0])
    text, mask = torch.randn(1, 8, 384), torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    changed_padding = text.clone()
    changed_padding[:, 5:] = torch.randn(1, 3, 384)
    masked = _perturbed("PixelDiT-T2I-T/4")
    with torch.no_grad():
        reference = masked(x, t, text, mask)
        torch.testing.assert_close(masked(x, t, changed_padding, mask), reference, atol=1e-6, rtol=0)
        # Fewer padding tokens, same real ones: identical, since positions of real tokens do not move.
        torch.testing.assert_close(masked(x, t, text[:, :6], mask[:, :6]), reference, atol=1e-6, rtol=0)
        assert (masked(x, t, changed_padding[:, [1, 0, 2, 3, 4, 5, 6, 7]], mask) - reference).abs().max() > 1e-4
    upstream_like = _perturbed("PixelDiT-T2I-T/4", mask_text_padding=False)  # the released model's behaviour
    with torch.no_grad():
        assert (upstream_like(x, t, changed_padding, mask) - upstream_like(x, t, text, mask)).abs().max() > 1e-4


def test_initialisation_follows_upstream_t2i():
    model = build_network("PixelDiT-T2I-S/4")
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), torch.tensor([1.0, 999.0]), torch.randn(2, 32, 384))
    assert out.abs().max().item() == 0.0                     # zero output layer
    assert model.patch_embedder.bias.abs().max().item() == 0.0
    # Unlike the class-conditional model, AdaLN layers keep PyTorch's default (non-zero) initialisation.
    assert model.patch_blocks[0].image.modulation.weight.abs().min() > 0
    assert model.pixel_blocks[0].modulation.weight.abs().max() > 0
    assert 0.9 < model.text_pos_embedding.std().item() < 1.1   # randn position table
    assert abs(model.t_embedder.mlp[0].weight.std().item() - 0.02) < 0.002


def test_bad_inputs_fail_with_a_message_naming_the_problem():
    model = build_network("PixelDiT-T2I-T/4")
    x, t, text = torch.randn(1, 3, 16, 16), torch.tensor([3.0]), torch.randn(1, 4, 384)
    with pytest.raises(ValueError, match="patch size 4"):
        model(torch.randn(1, 3, 18, 16), t, text)
    with pytest.raises(ValueError, match="384"):
        model(x, t, torch.randn(1, 4, 2304))
    with pytest.raises(ValueError, match="position table"):
        model(x, t, torch.randn(1, 33, 384))
    with pytest.raises(ValueError, match="text_mask"):
        model(x, t, text, torch.ones(1, 5))
    with pytest.raises(KeyError, match="PixelDiT-T2I-S/4"):
        build_network("PixelDiT-T2I-XL")


def test_adapter_lets_a_data_time_sampler_integrate_the_noise_time_model():
    """Euler in the class-conditional convention through the adapter = Euler in SANA's sigma convention."""
    model = _perturbed("PixelDiT-T2I-T/4")
    text, mask = torch.randn(2, 6, 384), torch.ones(2, 6, dtype=torch.long)
    adapter = DataTimeVelocity(model)
    noise = torch.randn(2, 3, 8, 8)
    sampler = Sampler("euler", 6, shift=3.0)
    ours = sampler.sample(lambda x, t, _labels: adapter(x, t, text, mask), noise, torch.zeros(2, dtype=torch.long), 0)

    sigmas = 1 - sampler.timesteps()  # 1 (noise) -> 0 (data)
    x = noise
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (sigma_next - sigma) * model(x, 1000 * sigma.expand(2), text, mask)
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)


def _analytic_flops(config, height, width, text_length):
    """The paper's convention written out by hand (2 per multiply-add, 4·N²·C per attention)."""
    D, p, Dp = config.hidden_size, config.patch_size, config.pixel_hidden_size
    A, p2, HW = config.pixel_attn_hidden_size or D, p * p, height * width
    L, N = HW // p2, HW // p2 + text_length
    swiglu_hidden = int(2 * int(4 * D) / 3)
    total = 2 * L * 3 * p2 * D + 2 * (256 * D + D * D) + 2 * text_length * config.text_dim * D
    total += config.patch_depth * (2 * 2 * D * 6 * D + 2 * N * (3 * D * D + D * D + 3 * D * swiglu_hidden)
                                   + 4 * N * N * D)
    total += 2 * HW * 3 * Dp + 2 * HW * Dp * 3
    total += config.pixel_depth * (2 * L * D * 6 * p2 * Dp + 2 * 2 * L * p2 * Dp * A + 2 * L * 4 * A * A
                                   + 4 * L * L * A + 2 * HW * 2 * 4 * Dp * Dp)
    return total


def test_flops_count_every_linear_and_the_joint_attention():
    config = MODELS["PixelDiT-T2I-T/4"]
    assert count_flops(config, 16, 24, text_length=7) == _analytic_flops(config, 16, 24, 7)
    full = MODELS["PixelDiT-T2I"]
    assert count_flops(full, 512) == _analytic_flops(full, 512, 512, 300)


def test_registry_and_config_round_trip():
    for name, config in models_in("pixeldit-t2i").items():
        assert config.name == name
        assert type(config).from_dict(config.to_dict()) == config
    assert model_config("PixelDiT-T2I").pixel_config().attn_hidden_size == 1152
    with pytest.raises(ValueError, match="unknown"):
        type(config).from_dict({**config.to_dict(), "depth": 3})
    assert dataclasses.replace(config, mask_text_padding=False) != config
