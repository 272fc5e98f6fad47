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

Classifier-free guidance: ``v = v_u + w·(v_c − v_u)`` where ``cfg_min < t < cfg_max`` (strict, and
compared in float32 like the reference, so a grid point that rounds onto a bound is outside);
elsewhere the conditional velocity alone. The reference still runs the doubled batch there and forms
``v_u + 1·(v_c − v_u)``, which equals ``v_c`` up to float rounding; skipping the unconditional half
saves those evaluations. Inside the interval the conditional and unconditional passes run as one
batched forward ``[uncond; cond]``, as in the reference. The model output is taken in float32 before
guidance (the reference may combine bf16 outputs under autocast).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterator, Protocol

import numpy as np
import torch

METHODS = ("euler", "heun", "heun-exact", "ab2")


class VelocityModel(Protocol):
    """``model(x, t, y) -> v``: x (B, C, H, W), t (B,) float in [0, 1], y (B,) int64 class ids."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


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
        uniform = torch.linspace(0.0, 1.0 - 1.0 / self.steps, self.steps)  # float32
        uniform = torch.cat([uniform, torch.ones(1)])
        return uniform / (uniform + (1.0 - uniform) * self.shift)

    def guidance_active(self, t: torch.Tensor) -> bool:
        """Strict cfg_min < t < cfg_max on a float32 scalar tensor (float32 comparison, as the reference)."""
        return self.uses_guidance and bool(self.cfg_min < t) and bool(t < self.cfg_max)

    def velocity(self, model: VelocityModel, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                 null_label: int) -> torch.Tensor:
        """Guided velocity at time t (a float32 CPU scalar) for the batch x (B, C, H, W), as float32."""
        batch = x.shape[0]
        t_batch = torch.full((batch,), float(t), dtype=torch.float32, device=x.device)  # (B,)
        if not self.guidance_active(t):
            return model(x, t_batch, labels).float()
        uncond_labels = torch.full_like(labels, null_label)
        both_x, both_t = torch.cat([x, x]), t_batch.repeat(2)                 # (2B, C, H, W), (2B,)
        v_uncond, v_cond = model(both_x, both_t, torch.cat([uncond_labels, labels])).float().chunk(2)
        return v_uncond + self.cfg_scale * (v_cond - v_uncond)

    def trajectory(self, model: VelocityModel, noise: torch.Tensor, labels: torch.Tensor,
                   null_label: int) -> Iterator[torch.Tensor]:
        """Yield x after each of the `steps` steps, starting from noise (B, C, H, W) at t = 0."""
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
                v = self.velocity(model, x, t, labels, null_label)

            if self.method == "euler" or (self.method.startswith("heun") and is_last):
                x = x + v * dt
            elif self.method == "ab2":
                x = x + v * dt if previous_v is None else x + dt * (1.5 * v - 0.5 * previous_v)
                previous_v = v
            else:  # heun predictor–corrector
                v_end = self.velocity(model, x + v * dt, t_next, labels, null_label)
                x = x + (v + v_end) / 2 * dt
                previous_v = v_end
            yield x

    @torch.no_grad()
    def sample(self, model: VelocityModel, noise: torch.Tensor, labels: torch.Tensor,
               null_label: int) -> torch.Tensor:
        """Integrate from noise (t = 0) to data (t = 1); returns float32 (B, C, H, W), nominally in [-1, 1]."""
        x = noise
        for x in self.trajectory(model, noise, labels, null_label):
            pass
        return x


PRESETS: dict[str, Sampler] = {
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
}


def get_sampler(name: str) -> Sampler:
    """A preset by name, or any sampler spelled as its `key`."""
    if name in PRESETS:
        return PRESETS[name]
    try:
        return Sampler.from_key(name)
    except ValueError:
        raise ValueError(f"unknown sampler {name!r}: use a preset ({', '.join(PRESETS)}) or a key such as "
                         f"{PRESETS['paper-256'].key!r}") from None
