"""Text conditions in the samplers, and the flow DPM-Solver (SANA's T2I sampler) against diffusers used directly
and against DPM-Solver++(2M) written out from its formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixeldit.conditioning import ClassLabels, TextCondition
from pixeldit.samplers import SAMPLER_PRESETS, Sampler, get_sampler

T, D = 5, 3


def text_condition(batch: int, seed: int = 0) -> TextCondition:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, T, D, generator=generator)
    mask = torch.ones(batch, T, dtype=torch.long)
    mask[:, -1] = 0
    return TextCondition(tokens, mask, torch.zeros(1, T, D), torch.tensor([[1, 0, 0, 0, 0]]))


def text_velocity(x, t, tokens, mask):
    """A field that depends on x, t and the (masked) text: the null embedding (zeros) gives a different field."""
    pooled = (tokens * mask[..., None]).sum(1).mean(-1).view(-1, 1, 1, 1)   # (B, 1, 1, 1)
    t = t.view(-1, 1, 1, 1)
    return -1.1 * x * (1 - 0.4 * t) + 0.3 * torch.sin(2 * x + t) + 0.5 * pooled * (1 + t)


def test_unconditional_and_cat_build_null_first_batches():
    condition = text_condition(2)
    both = condition.unconditional().cat(condition)
    tokens, mask = both.model_args()
    assert tokens.shape == (4, T, D) and mask.shape == (4, T)
    assert torch.equal(tokens[:2], torch.zeros(2, T, D)) and torch.equal(mask[:2], torch.tensor([[1, 0, 0, 0, 0]] * 2))
    assert torch.equal(tokens[2:], condition.tokens) and torch.equal(mask[2:], condition.mask)
    labels = ClassLabels(torch.tensor([3, 4]), 10)
    assert labels.unconditional().cat(labels).model_args()[0].tolist() == [10, 10, 3, 4]


def test_a_null_embedding_of_the_wrong_length_names_the_fix():
    with pytest.raises(ValueError, match="same encoder and max_length"):
        TextCondition(torch.zeros(2, T, D), torch.ones(2, T), torch.zeros(1, T + 1, D), torch.ones(1, T + 1))


def test_text_guidance_combines_the_null_and_prompt_branches_in_one_call():
    calls = []

    def recorder(x, t, tokens, mask):
        calls.append(tokens.shape[0])
        return text_velocity(x, t, tokens, mask)

    condition, x = text_condition(2), torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    sampler = Sampler("euler", 4, cfg_scale=3.0, cfg_min=0.2, cfg_max=0.9)
    guided = sampler.velocity(recorder, x, torch.tensor(0.5), condition)
    v_uncond = text_velocity(x, torch.full((2,), 0.5), *condition.unconditional().model_args())
    v_cond = text_velocity(x, torch.full((2,), 0.5), *condition.model_args())
    torch.testing.assert_close(guided, v_uncond + 3.0 * (v_cond - v_uncond))
    assert calls == [4]
    outside = sampler.velocity(recorder, x, torch.tensor(0.95), condition)
    torch.testing.assert_close(outside, text_velocity(x, torch.full((2,), 0.95), *condition.model_args()))
    assert calls == [4, 2]


def test_class_labels_through_the_condition_object_equal_the_label_tensor_call():
    """The class-conditional call style (labels + null_label) and ClassLabels are the same path, bit for bit."""
    def by_label(x, t, y):
        return -x * (1 + y.view(-1, 1, 1, 1).float() / 10) + t.view(-1, 1, 1, 1)
    noise, labels = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 5, 9])
    for name in ("ab2-20-cfg", "paper-t2i-512"):
        sampler = get_sampler(name)
        assert torch.equal(sampler.sample(by_label, noise, labels, 10), sampler.sample(by_label, noise, ClassLabels(labels, 10)))


def test_text_sampling_is_deterministic_and_per_sample():
    """Same inputs, same output; a sample does not depend on the other rows of its batch."""
    noise, condition = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(1)), text_condition(3)
    sampler = SAMPLER_PRESETS["paper-t2i-1024"]
    first = sampler.sample(text_velocity, noise, condition)
    assert torch.equal(first, sampler.sample(text_velocity, noise, condition))
    alone = sampler.sample(text_velocity, noise[1:2], condition.select([1]))
    torch.testing.assert_close(alone, first[1:2], atol=1e-6, rtol=0)


def diffusers_loop(flow_model, noise, steps, shift, cfg_scale=1.0, interval=(0.0, 1.0)):
    """diffusers' scheduler driven directly, SANA style: the model predicts eps - x_0 at sigma (1 = noise);
    guidance inside the sigma interval (strict)."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, use_flow_sigmas=True, flow_shift=shift,
                                            prediction_type="flow_prediction", algorithm_type="dpmsolver++",
                                            solver_order=2, solver_type="midpoint", lower_order_final=True,
                                            final_sigmas_type="zero")
    scheduler.set_timesteps(steps)
    x = noise
    for i, timestep in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        output = flow_model(x, sigma, "cond")
        if cfg_scale != 1.0 and interval[0] < sigma < interval[1]:
            uncond = flow_model(x, sigma, "uncond")
            output = uncond + cfg_scale * (output - uncond)
        x = scheduler.step(output, timestep, x).prev_sample
    return x


def flow_model_of(condition):
    """The text field seen in SANA's convention: sigma = 1 - t, output eps - x_0 = -v."""
    def flow_model(x, sigma, branch):
        chosen = condition if branch == "cond" else condition.unconditional()
        t = (1.0 - sigma).float().expand(x.shape[0])
        return -text_velocity(x, t, *chosen.model_args())
    return flow_model


@pytest.mark.parametrize("steps, shift, cfg_scale, cfg_interval", [
    (10, 1.0, 1.0, (0.0, 1.0)), (25, 4.0, 4.5, (0.0, 1.0)), (12, 3.0, 2.0, (0.3, 0.8))])
def test_flow_dpm_matches_diffusers_scheduler_used_directly(steps, shift, cfg_scale, cfg_interval):
    """Our SANA interval [a, b] on sigma is [1 - b, 1 - a] on t."""
    condition = text_condition(2, seed=4)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    ours = Sampler("flow-dpm", steps, cfg_scale, 1.0 - cfg_interval[1], 1.0 - cfg_interval[0], shift).sample(
        text_velocity, noise, condition)
    direct = diffusers_loop(flow_model_of(condition), noise, steps, shift, cfg_scale, cfg_interval)
    torch.testing.assert_close(ours, direct, atol=2e-5, rtol=0)


def dpm_solver_pp_2m(flow_model, noise, steps, shift):
    """DPM-Solver++(2M) as SANA runs it (dpm_solver.py, multistep, order 2, lower_order_final, time_uniform_flow),
    written out from the formulas in float64: x_0 = x - sigma·flow, lambda = log((1 - sigma) / sigma)."""
    sigmas = 1.0 - np.linspace(1.0, 1.0 / 1000, steps + 1)
    sigmas = np.flip(shift * sigmas / (1 + (shift - 1) * sigmas))                # noise -> data, last = 0
    x = noise.double()
    previous = None                                                            # (x_0 estimate, lambda, h)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = x - s * flow_model(x.float(), torch.tensor(s, dtype=torch.float32), "cond").double()
        lam = math.log((1 - s) / s)
        if s_next == 0:   # the last step, first order onto sigma = 0, lands on the data estimate
            return x0
        h = math.log((1 - s_next) / s_next) - lam
        step = (s_next / s) * x - (1 - s_next) * math.expm1(-h) * x0
        if previous is not None:                                                # second order: midpoint correction
            r = (lam - previous[1]) / h
            step = step - 0.5 * (1 - s_next) * math.expm1(-h) * (x0 - previous[0]) / r
        previous, x = (x0, lam), step
    return x


@pytest.mark.parametrize("steps, shift", [(8, 1.0), (20, 4.0)])
def test_flow_dpm_is_sanas_dpm_solver_pp_2m(steps, shift):
    condition = text_condition(2, seed=6)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    ours = Sampler("flow-dpm", steps, shift=shift).sample(text_velocity, noise, condition)
    reference = dpm_solver_pp_2m(flow_model_of(condition), noise, steps, shift)
    torch.testing.assert_close(ours.double(), reference, atol=1e-4, rtol=0)


def test_flow_dpm_converges_with_second_order():
    """On dx/dt = λx + βt the error against the exact flow from the solver's first time falls by more than the
    2x of a first-order method per halving (about 3.3x here: the grid starts at sigma = 0.999, lambda = -6.9)."""
    lam, beta = -1.5, 2.0

    def field(x, t, y):
        return lam * x + beta * t.view(-1, 1, 1, 1)

    def exact(x0, t0):
        c = beta / lam**2
        return math.exp(lam * (1 - t0)) * (x0 + c + beta * t0 / lam) - c - beta / lam

    errors = []
    for steps in (128, 256, 512):
        sampler = Sampler("flow-dpm", steps)
        x = sampler.sample(field, torch.full((1, 1, 1, 1), 0.7), torch.zeros(1, dtype=torch.long), 1)
        errors.append(abs(x.item() - exact(0.7, float(sampler.timesteps()[0]))))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(2.8 < r < 4.5 for r in ratios), (errors, ratios)


def test_t2i_presets_and_keys():
    assert SAMPLER_PRESETS["paper-t2i-1024"].key == "flow-dpm-steps25-cfg4.5-int0.0-1.0-shift4.0"
    assert get_sampler(SAMPLER_PRESETS["paper-t2i-512"].key) == SAMPLER_PRESETS["paper-t2i-512"]
    assert SAMPLER_PRESETS["paper-t2i-1024"].model_evaluations == 25
    grid = SAMPLER_PRESETS["paper-t2i-1024"].timesteps()
    assert grid[-1] == 1 and 0 < grid[0] < 1e-3 and bool(torch.all(grid[1:] > grid[:-1]))
