"""PixelDiT architecture: shapes, initialisation, exact parameter counts, FLOPs, ablation rungs."""
import dataclasses

import pytest
import torch

from pixeldit.models import ABLATION_LADDER, MODELS, PixelDiT, build_network, model_config, models_in
from pixeldit.models.flops import count_flops, count_params


@pytest.mark.parametrize("name, expected", [
    ("PixelDiT-B/16", 184_749_155),
    ("PixelDiT-L/16", 569_648_963),
    ("PixelDiT-XL/16", 797_383_203),
])
def test_parameter_counts_equal_the_official_implementation(name, expected):
    assert count_params(name) == expected


def test_post_modulation_parameter_count():
    assert count_params("PixelDiT-XL/16", pit_adaln_post_modulation=True) == 759_601_699


def test_flops_match_the_paper_convention():
    assert abs(count_flops("PixelDiT-XL/16", 256) / 1e9 - 311) / 311 < 0.01
    assert abs(count_flops("PixelDiT-B/16", 256) / 1e9 - 75) / 75 < 0.01
    assert abs(count_flops("PixelDiT-L/16", 256) / 1e9 - 228) / 228 < 0.01
    # the paper's "no compaction" rung: attention over all 65,536 pixel tokens, 82,247 GFLOPs
    no_compaction = count_flops("PixelDiT-XL/16", 256, ablation="dual-level-no-compaction") / 1e9
    assert abs(no_compaction - 82_247) / 82_247 < 0.01


@pytest.mark.parametrize("height, width", [(32, 32), (16, 24), (64, 32)])
@pytest.mark.parametrize("rung", list(ABLATION_LADDER))
def test_every_rung_maps_images_to_velocities_of_the_same_shape(rung, height, width):
    model = build_network("PixelDiT-T/4", ablation=rung)
    x = torch.randn(2, 3, height, width)
    out = model(x, torch.rand(2), torch.tensor([3, model.num_classes]))
    assert out.shape == x.shape and out.dtype == x.dtype


def test_rungs_differ_as_the_ladder_says():
    configs = {rung: model_config("PixelDiT-S/4", ablation=rung) for rung in ABLATION_LADDER}
    assert configs["vanilla-dit"].patch_block == "vanilla" and configs["vanilla-dit"].pixel_depth == 0
    assert configs["rope-rmsnorm"].patch_block == "augmented" and configs["rope-rmsnorm"].pixel_depth == 0
    assert not configs["dual-level-no-compaction"].pixel_compaction
    assert configs["compaction-patch-adaln"].pixel_adaln == "patch"
    assert configs["pixeldit"] == MODELS["PixelDiT-S/4"]
    # patch-wise AdaLN has one modulation vector per patch, pixel-wise one per pixel (p^2 = 16 times more rows)
    patch_wise = build_network("PixelDiT-S/4", ablation="compaction-patch-adaln").pixel_blocks[0].modulation
    pixel_wise = build_network("PixelDiT-S/4").pixel_blocks[0].modulation
    assert pixel_wise.out_features == 16 * patch_wise.out_features


def test_zero_initialisation_gives_zero_velocity_and_identity_blocks():
    model = build_network("PixelDiT-T/4")
    x = torch.randn(2, 3, 16, 16)
    assert torch.count_nonzero(model(x, torch.rand(2), torch.tensor([0, 1]))) == 0
    # with only the output layer perturbed, AdaLN-Zero keeps every block an identity: the label cannot matter
    torch.nn.init.normal_(model.final_linear.weight)
    t = torch.full((2,), 0.3)
    out_a = model(x, t, torch.tensor([0, 1]))
    out_b = model(x, t, torch.tensor([5, 10]))
    assert torch.count_nonzero(out_a) > 0
    torch.testing.assert_close(out_a, out_b)


def test_post_modulation_is_not_an_identity_at_initialisation():
    pre = build_network("PixelDiT-T/4").pixel_blocks[0]
    post = build_network("PixelDiT-T/4", pit_adaln_post_modulation=True).pixel_blocks[0]
    post.load_state_dict({k: v for k, v in pre.state_dict().items() if "modulation" not in k}, strict=False)
    pixels = torch.randn(4, 16, 8)                      # (B*L, p^2, D_pix) for B=1, a 2x2 patch grid
    s_cond = torch.randn(4, 64)
    angles = torch.zeros(4, 16)
    torch.testing.assert_close(pre(pixels, s_cond, (1, 2, 2), angles), pixels)
    assert not torch.allclose(post(pixels, s_cond, (1, 2, 2), angles), pixels)
    assert post.modulation.out_features == 4 * 16 * 8 and pre.modulation.out_features == 6 * 16 * 8


def test_bad_inputs_fail_with_a_message_naming_the_problem():
    model = build_network("PixelDiT-T/4")
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        model(torch.randn(1, 3, 30, 32), torch.rand(1), torch.tensor([0]))
    with pytest.raises(ValueError, match="expects x of shape"):
        model(torch.randn(1, 1, 32, 32), torch.rand(1), torch.tensor([0]))
    with pytest.raises(KeyError, match="unknown model"):
        build_network("PixelDiT-XXL/2")
    with pytest.raises(KeyError, match="unknown ablation rung"):
        build_network("PixelDiT-T/4", ablation="no-such-rung")
    with pytest.raises(ValueError, match="patch_block"):
        model_config("PixelDiT-T/4", patch_block="mamba")


def test_forward_is_deterministic_and_batch_independent():
    model = build_network("PixelDiT-T/4")
    for param in model.parameters():   # perturb the zero-initialised layers so the output carries signal
        torch.nn.init.normal_(param, std=0.05) if torch.count_nonzero(param) == 0 else None
    x, t, y = torch.randn(4, 3, 16, 16), torch.rand(4), torch.tensor([0, 1, 2, 10])
    full = model(x, t, y)
    halves = torch.cat([model(x[:2], t[:2], y[:2]), model(x[2:], t[2:], y[2:])])
    torch.testing.assert_close(full, halves, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, t, y), full, atol=0, rtol=0)


def test_registry_names_follow_the_paper():
    assert {"PixelDiT-B/16", "PixelDiT-L/16", "PixelDiT-XL/16"} <= set(models_in("pixeldit"))
    xl = MODELS["PixelDiT-XL/16"]
    assert (xl.patch_depth, xl.pixel_depth, xl.hidden_size, xl.num_heads, xl.patch_size, xl.pixel_hidden_size) == (26, 4, 1152, 16, 16, 16)
    assert isinstance(build_network(dataclasses.replace(xl, patch_depth=1, pixel_depth=1, hidden_size=32, num_heads=2)), PixelDiT)


@pytest.mark.parametrize("rung", ["pixeldit", "vanilla-dit"])
def test_compiled_forward_and_backward_match_eager(rung):
    """`compile: true` in a training config must trace: position tables are built outside the graph."""
    torch.manual_seed(0)
    model = build_network("PixelDiT-T/4", ablation=rung)
    for block in model.modules():  # non-zero modulations and head, so every path carries gradient
        if isinstance(block, torch.nn.Linear):
            torch.nn.init.normal_(block.weight, std=0.02)
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 10])
    compiled = torch.compile(model, backend="aot_eager", fullgraph=False)
    torch._dynamo.reset()
    outputs, grads = [], []
    for net in (model, compiled):
        model.zero_grad()
        out = net(x, t, y)
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append(model.patch_embedder.weight.grad.clone())
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
