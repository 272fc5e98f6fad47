"""Samplers: exactness and convergence order on closed-form fields, step-for-step agreement with PixelDiT's
reference samplers (golden traces), the CFG interval's boundaries, presets and keys."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pixeldit.samplers import METHODS, SAMPLER_PRESETS, Sampler, get_sampler

FIXTURE = Path(__file__).parent / "fixtures" / "reference_ab2"
NULL = 10


def no_labels(batch: int) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long)


class CallRecorder:
    """Wraps a velocity field and records (t, batch size, labels) of every forward call."""

    def __init__(self, field):
        self.field, self.calls = field, []

    def __call__(self, x, t, y):
        self.calls.append((float(t[0]), x.shape[0], y.tolist()))
        return self.field(x, t, y)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_constant_field_is_integrated_exactly(method, shift):
    """dx/dt = c gives x(1) = x(t_0) + (1 - t_0)·c whatever the grid: every method must get it to float rounding.
    (t_0 = 0 except for flow-dpm, which starts, as SANA's solver, at sigma = shifted 1 - 1/1000.)"""
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    constant = torch.linspace(-1, 1, 3).view(1, 3, 1, 1)
    sampler = Sampler(method, 7, shift=shift)
    out = sampler.sample(lambda x, t, y: constant.expand_as(x), noise, no_labels(2), NULL)
    grid = sampler.timesteps()
    torch.testing.assert_close(out, noise + (grid[-1] - grid[0]) * constant, atol=1e-6, rtol=0)


LAMBDA, BETA = -1.5, 2.0


def linear_field(x, t, y):
    return LAMBDA * x + BETA * t.view(-1, 1, 1, 1)


def linear_solution(x0: float) -> float:
    """Exact x(1) of dx/dt = λx + βt, x(0) = x0."""
    c = BETA / LAMBDA**2
    return math.exp(LAMBDA) * (x0 + c) - c - BETA / LAMBDA


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2), ("heun-exact", 2), ("ab2", 2)])
@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_convergence_order_on_a_linear_field(method, order, shift):
    """Halving the step divides the global error by about 2**order (non-uniform grids included)."""
    x0 = torch.full((1, 1, 1, 1), 0.7)
    errors = [abs(Sampler(method, steps, shift=shift).sample(linear_field, x0, no_labels(1), NULL).item()
                  - linear_solution(0.7)) for steps in (16, 32, 64)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    expected = 2.0**order
    assert all(0.85 * expected < r < 1.2 * expected for r in ratios), (errors, ratios)


def toy_velocity(x, t, y):
    """The field the golden traces were made with (tests/fixtures/reference_ab2/README.md)."""
    offset = (0.3 * (y.float() - NULL / 2) / NULL).view(-1, 1, 1, 1)
    t = t.view(-1, 1, 1, 1)
    return -1.3 * x * (1 - 0.5 * t) + 0.4 * torch.sin(2 * x + 3 * t) + offset * (1 + t)


REFERENCE = np.load(FIXTURE / "traces.npz")
REFERENCE_CONFIGS = json.loads((FIXTURE / "traces.json").read_text())["configs"]


@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_matches_reference_trace(name):
    """Every step equals the reference sampler's (only float rounding apart: the reference forms
    v_u + 1·(v_c − v_u) outside the CFG interval where we use v_c)."""
    config = REFERENCE_CONFIGS[name]
    sampler = Sampler(config["method"], config["steps"], config["cfg_scale"], config["cfg_min"], config["cfg_max"],
                      config["shift"])
    assert np.array_equal(sampler.timesteps().numpy(), REFERENCE[f"{name}/timesteps"])
    noise, labels = torch.from_numpy(REFERENCE["noise"]), torch.from_numpy(REFERENCE["labels"])
    states = np.stack([x.numpy() for x in sampler.trajectory(toy_velocity, noise, labels, NULL)])
    expected = REFERENCE[f"{name}/states"]
    assert states.shape == expected.shape
    np.testing.assert_allclose(states, expected, rtol=0, atol=2e-6)


def test_reference_trace_pins_the_float32_interval_comparison():
    """The boundary config's last grid point is float32(0.9) = cfg_max: guidance must be off there. A float64
    comparison (0.89999998 < 0.9) would switch it on; the trace's last step would then differ visibly."""
    sampler = Sampler("ab2", 10, 3.0, 0.1, 0.9)
    last_t = sampler.timesteps()[9]
    assert float(last_t) < 0.9 and not sampler.guidance_active(last_t)


def test_cfg_interval_is_strict_and_batches_cond_with_uncond():
    """t = cfg_min and t = cfg_max (exact float32 grid points) run the conditional model alone; inside the
    interval one forward holds [uncond; cond]; t = 0 is noise."""
    recorder = CallRecorder(toy_velocity)
    sampler = Sampler("euler", 10, cfg_scale=2.0, cfg_min=0.5, cfg_max=0.7)  # grid 0, 0.1, ..., 0.9 (float32)
    sampler.sample(recorder, torch.zeros(2, 3, 4, 4), torch.tensor([3, 4]), NULL)
    guided = [round(t, 6) for t, batch, _ in recorder.calls if batch == 4]
    assert guided == [0.6]                     # 0.5 and float32(0.7) are on the bounds: not guided
    _, _, labels = next(call for call in recorder.calls if call[1] == 4)
    assert labels == [NULL, NULL, 3, 4]        # unconditional half first, as the reference
    assert all(labels == [3, 4] for _, batch, labels in recorder.calls if batch == 2)


def test_guided_velocity_formula():
    """v = v_u + w·(v_c − v_u) inside the interval, v_c outside."""
    def by_label(x, t, y):
        return torch.where(y.view(-1, 1, 1, 1) == NULL, 1.0, 3.0).expand_as(x).clone()
    sampler = Sampler("euler", 4, cfg_scale=2.5, cfg_min=0.2, cfg_max=0.8)
    x, labels = torch.zeros(1, 3, 2, 2), torch.tensor([1])
    inside = sampler.velocity(by_label, x, torch.tensor(0.5), labels, NULL)
    outside = sampler.velocity(by_label, x, torch.tensor(0.9), labels, NULL)
    assert torch.all(inside == 1.0 + 2.5 * (3.0 - 1.0)) and torch.all(outside == 3.0)


@pytest.mark.parametrize("method, forwards", [("euler", 6), ("ab2", 6), ("heun", 6), ("heun-exact", 11)])
def test_forward_pass_counts(method, forwards):
    recorder = CallRecorder(toy_velocity)
    sampler = Sampler(method, 6)
    sampler.sample(recorder, torch.zeros(1, 3, 2, 2), torch.tensor([0]), NULL)
    assert len(recorder.calls) == forwards == sampler.model_evaluations


def test_timesteps_grid_and_shift():
    grid = Sampler("ab2", 4, shift=3.0).timesteps()
    uniform = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    torch.testing.assert_close(grid, uniform / (uniform + (1 - uniform) * 3.0))
    assert grid.dtype == torch.float32 and grid[0] == 0 and grid[-1] == 1


def test_paper_presets_and_keys():
    assert SAMPLER_PRESETS["paper-256"].key == "ab2-steps100-cfg2.75-int0.1-0.9-shift1.0"
    assert SAMPLER_PRESETS["paper-512"] == Sampler("ab2", 100, 3.5, 0.1, 1.0, 2.0)
    assert SAMPLER_PRESETS["paper-256-80ep"] == SAMPLER_PRESETS["paper-256-160ep"] == Sampler("ab2", 100, 3.25, 0.1, 1.0, 1.0)
    keys = [sampler.key for sampler in SAMPLER_PRESETS.values()]
    for sampler in SAMPLER_PRESETS.values():
        assert Sampler.from_key(sampler.key) == sampler and get_sampler(sampler.key) == sampler
    assert len(set(keys)) == len(keys) - 1     # the 80-ep and 160-ep presets are the same sampler


def test_key_round_trips_unusual_values():
    sampler = Sampler("heun-exact", 3, cfg_scale=0.00001, cfg_min=0.0, cfg_max=0.125, shift=12.5)
    assert sampler.key == "heun-exact-steps3-cfg0.00001-int0.0-0.125-shift12.5"
    assert Sampler.from_key(sampler.key) == sampler


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="paper-256.*paper-512.*ab2-50-cfg"):
        get_sampler("paper-1024")


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="dpm", steps=10), "unknown sampler method"),
    (dict(method="ab2", steps=0), "positive integer"),
    (dict(method="ab2", steps=10, cfg_min=0.9, cfg_max=0.1), "cfg_min < cfg_max"),
    (dict(method="ab2", steps=10, shift=0.0), "shift must be > 0"),
    (dict(method="ab2", steps=10, cfg_scale=float("nan")), "finite"),
])
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampler(**kwargs)
