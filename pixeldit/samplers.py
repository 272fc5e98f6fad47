"""ODE samplers for rectified-flow velocity models: Euler, Heun and PixelDiT's Adams–Bashforth-2.

Conventions (PixelDiT `c2i/src/diffusion.py`): t = 0 is noise, t = 1 is data, the model predicts the
velocity v = x_data − ε, and the sampler integrates dx/dt = v from t = 0 to t = 1.

Time grid: ``linspace(0, 1 − 1/N, N) ∪ {1}`` in float32, then warped by the shift
``t ← t / (t + (1 − t)·shift)`` (shift > 1 spends more steps near the noise end).

Methods, each step for step as the reference samplers:

- ``euler``: ``x += dt·v(x, t)``; N model evaluations.
- ``ab2`` (the reference's ``FlowDPMSolverSampler``, used for every PixelDiT ImageNet number): the first
  step is Euler, then ``x += dt·(1.5·v_i − 0.5·v_{i−1})`` with these fixed coefficients even where the
  steps are not uniform; N evaluations.
- ``heun`` (the reference's ``HeunSampler`` with its default ``exact_henu=False``): the corrector
  velocity at the end of step i, evaluated at the Euler predictor, is reused as the start velocity of
  step i + 1 instead of being re-evaluated at the corrected point; the last step is plain Euler; N
  evaluations.
- ``heun-exact`` (``exact_henu=True``, the Heun of JiT / EDM): the start velocity is evaluated afresh
  at every step; the last step is Euler; 2N − 1 evaluations.
- ``flow-dpm`` (the T2I reference's SANA ``flow_dpm-solver``: ``DPMS(..., model_type="flow")`` sampled
  ``multistep``, order 2, ``skip_type="time_uniform_flow"``): DPM-Solver++(2M) on the flow schedule, stepped
  by diffusers' ``DPMSolverMultistepScheduler`` configured as SANA's diffusers pipeline
  (``use_flow_sigmas``, ``flow_shift``, ``prediction_type="flow_prediction"``, midpoint, ``final_sigmas_type
  ="zero"``). Its grid is SANA's: σ = 1 − linspace(1, 1/1000, N + 1), shifted σ ← s·σ / (1 + (s − 1)·σ),
  from σ ≈ 1 (noise) to 0, the first step first-order, the last one first-order onto σ = 0; N evaluations.
  In this module's time t = 1 − σ, and the model is called at the exact t (SANA feeds the continuous
  1000·σ; diffusers' SanaPipeline feeds the integer timesteps instead).

Classifier-free guidance: ``v = v_u + w·(v_c − v_u)`` where ``cfg_min < t < cfg_max`` (strict, and
compared in float32 like the reference, so a grid point that rounds onto a bound is outside);
elsewhere the conditional velocity alone. The reference still runs the doubled batch there and forms
``v_u + 1·(v_c − v_u)``, which equals ``v_c`` up to float rounding; skipping the unconditional half
saves those evaluations. Inside the interval the conditional and unconditional passes run as one
batched forward ``[uncond; cond]``, as in the reference. The model output is taken in float32 before
guidance (the reference may combine bf16 outputs under autocast). SANA's interval [a, b] is on σ = 1 − t:
the same interval here is [1 − b, 1 − a] (its default [0, 1] is the same in both).

The condition is a `pixeldit.conditioning` object (class labels or text tokens with their null embedding);
a plain label tensor with `null_label` still works and means `ClassLabels(labels, null_label)`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterator, Protocol

import numpy as np
import torch

from pixeldit.conditioning import ClassLabels, Condition

METHODS = ("euler", "heun", "heun-exact", "ab2", "flow-dpm")
FLOW_TRAIN_TIMESTEPS = 1000   # SANA's discrete flow: the solver's last noise level is 1 - 1/1000


class VelocityModel(Protocol):
    """``model(x, t, *condition.model_args()) -> v``: x (B, C, H, W), t (B,) float in [0, 1]; for class labels
    the one argument is y (B,) int64, for text it is (tokens (B, T, d), mask (B, T))."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor: ...


def _as_condition(condition: Condition | torch.Tensor, null_label: int | None) -> Condition:
    """A label tensor (the class-conditional call style) becomes ClassLabels; a condition passes through."""
    if isinstance(condition, torch.Tensor):
        if null_label is None:
            raise ValueError("class labels need null_label (the unconditional class id, num_classes for PixelDiT)")
        return ClassLabels(condition, null_label)
    return condition


def flow_dpm_scheduler(steps: int, shift: float):
    """diffusers' DPM-Solver++(2M) set up as SANA's flow solver (see the module docstring)."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=FLOW_TRAIN_TIMESTEPS, use_flow_sigmas=True, flow_shift=shift,
        prediction_type="flow_prediction", algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="zero")
    scheduler.set_timesteps(steps)
    return scheduler


def _format_float(value: float) -> str:
    """Shortest round-tripping decimal, never in exponent form ('1.0', '2.75', '0.00001')."""
    return np.format_float_positional(float(value), unique=True, trim="0")


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One fully specified sampling procedure; `key` names it in folder and file names."""

    method: str
    steps: int
    cfg_scale: float = 1.0
    cfg_min: float = 0.0
    cfg_max: float = 1.0
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown sampler method {self.method!r}; choose one of {', '.join(METHODS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        for name in ("cfg_scale", "cfg_min", "cfg_max", "shift"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if not 0.0 <= self.cfg_min < self.cfg_max <= 1.0:
            raise ValueError(f"the guidance interval needs 0 <= cfg_min < cfg_max <= 1, "
                             f"got [{self.cfg_min}, {self.cfg_max}]")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0 (1.0 = no warping), got {self.shift}")

    @property
    def key(self) -> str:
        """Every knob in one stable string, e.g. 'ab2-steps100-cfg2.75-int0.1-0.9-shift1.0'."""
        return (f"{self.method}-steps{self.steps}-cfg{_format_float(self.cfg_scale)}"
                f"-int{_format_float(self.cfg_min)}-{_format_float(self.cfg_max)}"
                f"-shift{_format_float(self.shift)}")

    @classmethod
    def from_key(cls, key: str) -> Sampler:
        """Inverse of `key`."""
        number = r"(\d+(?:\.\d*)?)"
        match = re.fullmatch(rf"({'|'.join(METHODS)})-steps(\d+)-cfg{number}-int{number}-{number}-shift{number}", key)
        if match is None:
            raise ValueError(f"{key!r} is not a sampler key like 'ab2-steps100-cfg2.75-int0.1-0.9-shift1.0'")
        method, steps, cfg_scale, cfg_min, cfg_max, shift = match.groups()
        return cls(method, int(steps), float(cfg_scale), float(cfg_min), float(cfg_max), float(shift))

    @property
    def uses_guidance(self) -> bool:
        return self.cfg_scale != 1.0

    @property
    def model_evaluations(self) -> int:
        """Forward passes per sample trajectory (each guided one runs a doubled batch)."""
        return 2 * self.steps - 1 if self.method == "heun-exact" else self.steps

    def timesteps(self) -> torch.Tensor:
        """(steps + 1,) float32 grid from 0 (noise) to 1 (data), built exactly as the reference does."""
        if self.method == "flow-dpm":
            return 1.0 - flow_dpm_scheduler(self.steps, self.shift).sigmas.float()
        uniform = torch.linspace(0.0, 1.0 - 1.0 / self.steps, self.steps)  # float32
        uniform = torch.cat([uniform, torch.ones(1)])
        return uniform / (uniform + (1.0 - uniform) * self.shift)

    def guidance_active(self, t: torch.Tensor) -> bool:
        """Strict cfg_min < t < cfg_max on a float32 scalar tensor (float32 comparison, as the reference)."""
        return self.uses_guidance and bool(self.cfg_min < t) and bool(t < self.cfg_max)

    def velocity(self, model: VelocityModel, x: torch.Tensor, t: torch.Tensor, condition: Condition | torch.Tensor,
                 null_label: int | None = None) -> torch.Tensor:
        """Guided velocity at time t (a float32 CPU scalar) for the batch x (B, C, H, W), as float32."""
        condition = _as_condition(condition, null_label)
        batch = x.shape[0]
        t_batch = torch.full((batch,), float(t), dtype=torch.float32, device=x.device)  # (B,)
        if not self.guidance_active(t):
            return model(x, t_batch, *condition.model_args()).float()
        both = condition.unconditional().cat(condition)                       # [uncond; cond]
        both_x, both_t = torch.cat([x, x]), t_batch.repeat(2)                 # (2B, C, H, W), (2B,)
        v_uncond, v_cond = model(both_x, both_t, *both.model_args()).float().chunk(2)
        return v_uncond + self.cfg_scale * (v_cond - v_uncond)

    def trajectory(self, model: VelocityModel, noise: torch.Tensor, condition: Condition | torch.Tensor,
                   null_label: int | None = None) -> Iterator[torch.Tensor]:
        """Yield x after each of the `steps` steps, starting from noise (B, C, H, W) at t = 0."""
        condition = _as_condition(condition, null_label)
        if self.method == "flow-dpm":
            yield from self._flow_dpm_trajectory(model, noise, condition)
            return
        grid = self.timesteps()  # stays on the CPU: the guidance decisions then need no device sync
        x = noise.float()
        previous_v = None  # ab2: velocity of the previous step; heun: corrector velocity to reuse
        for i in range(self.steps):
            t, t_next = grid[i], grid[i + 1]
            dt = t_next - t
            is_last = i == self.steps - 1
            if self.method == "heun" and previous_v is not None:
                v = previous_v
            else:
                v = self.velocity(model, x, t, condition)

            if self.method == "euler" or (self.method.startswith("heun") and is_last):
                x = x + v * dt
            elif self.method == "ab2":
                x = x + v * dt if previous_v is None else x + dt * (1.5 * v - 0.5 * previous_v)
                previous_v = v
            else:  # heun predictor–corrector
                v_end = self.velocity(model, x + v * dt, t_next, condition)
                x = x + (v + v_end) / 2 * dt
                previous_v = v_end
            yield x

    def _flow_dpm_trajectory(self, model: VelocityModel, noise: torch.Tensor,
                             condition: Condition) -> Iterator[torch.Tensor]:
        """SANA's flow DPM-Solver++(2M): diffusers takes the flow prediction eps - x_0 = -v at sigma = 1 - t."""
        scheduler = flow_dpm_scheduler(self.steps, self.shift)
        x = noise.float()
        for i, timestep in enumerate(scheduler.timesteps):
            t = 1.0 - scheduler.sigmas[i].float()                              # float32 CPU scalar
            v = self.velocity(model, x, t, condition)                          # (B, C, H, W) x_0 - eps
            x = scheduler.step(-v, timestep, x).prev_sample.float()
            yield x

    @torch.no_grad()
    def sample(self, model: VelocityModel, noise: torch.Tensor, condition: Condition | torch.Tensor,
               null_label: int | None = None) -> torch.Tensor:
        """Integrate from noise (t = 0) to data (t = 1); returns float32 (B, C, H, W), nominally in [-1, 1]."""
        x = noise
        for x in self.trajectory(model, noise, condition, null_label):
            pass
        return x


SAMPLER_PRESETS: dict[str, Sampler] = {
    # PixelDiT's published ImageNet settings (c2i/README.md, HF model card).
    "paper-256": Sampler("ab2", 100, cfg_scale=2.75, cfg_min=0.1, cfg_max=0.9, shift=1.0),      # 320 ep, FID 1.61
    "paper-256-80ep": Sampler("ab2", 100, cfg_scale=3.25, cfg_min=0.1, cfg_max=1.0, shift=1.0),  # FID 2.36
    "paper-256-160ep": Sampler("ab2", 100, cfg_scale=3.25, cfg_min=0.1, cfg_max=1.0, shift=1.0),  # FID 1.97
    "paper-512": Sampler("ab2", 100, cfg_scale=3.5, cfg_min=0.1, cfg_max=1.0, shift=2.0),       # FID 1.81
    # Cheap settings for the embedded 32×32 default and smoke tests.
    "euler-50": Sampler("euler", 50),
    "heun-25": Sampler("heun", 25),
    "ab2-50": Sampler("ab2", 50),
    "ab2-50-cfg": Sampler("ab2", 50, cfg_scale=2.0, cfg_min=0.1, cfg_max=1.0),
    "ab2-20-cfg": Sampler("ab2", 20, cfg_scale=2.0, cfg_min=0.1, cfg_max=1.0),   # the embedded default's budget
    "euler-20": Sampler("euler", 20),
    # PixelDiT-T2I (t2i/inference.py: flow_dpm-solver, guidance interval [0, 1]; flow shift of the stage config:
    # 3.0 at 512², 4.0 at 1024²). The paper does not publish its benchmark steps / CFG: 25 steps follows the
    # paper's text, CFG 4.5 a single secondary source (upstream's default is 50 steps, CFG 3.5). See README.
    "paper-t2i-512": Sampler("flow-dpm", 25, cfg_scale=4.5, cfg_min=0.0, cfg_max=1.0, shift=3.0),
    "paper-t2i-1024": Sampler("flow-dpm", 25, cfg_scale=4.5, cfg_min=0.0, cfg_max=1.0, shift=4.0),
    "flow-dpm-20-cfg": Sampler("flow-dpm", 20, cfg_scale=3.0, cfg_min=0.0, cfg_max=1.0),  # the embedded T2I demo
}


def get_sampler(name: str) -> Sampler:
    """A preset by name, or any sampler spelled as its `key`."""
    if name in SAMPLER_PRESETS:
        return SAMPLER_PRESETS[name]
    try:
        return Sampler.from_key(name)
    except ValueError:
        raise ValueError(f"unknown sampler {name!r}: use a preset ({', '.join(SAMPLER_PRESETS)}) or a key such as "
                         f"{SAMPLER_PRESETS['paper-256'].key!r}") from None
