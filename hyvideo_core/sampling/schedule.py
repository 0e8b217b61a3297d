"""The shifted flow-matching sigma schedule (SPEC 5.1) and which part of it a run uses.

u_i = 1 - i/N, sigma_i = s*u_i / (1 + (s-1)*u_i), timestep_i = 1000*sigma_i for i < N.
The official scripts always pass `--flow-reverse`, so sampling runs sigma 1 -> 0; `reverse=False`
(sigma <- 1 - sigma after the shift) exists only to reproduce the reference scheduler's other mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidInputError, finite_number

NUM_TRAIN_TIMESTEPS = 1000
MAX_STEPS = 1000   # the nodes' widget limit (run/validate.py re-exports it)


def flow_sigmas(steps: int, shift: float, reverse: bool = True) -> torch.Tensor:
    """The N+1 sigmas of the reference FlowMatchDiscreteScheduler, float32."""
    _check_steps(steps)
    shift = finite_number("shift", shift, "The official default is 7.0.")
    if not shift > 0:
        raise InvalidInputError(f"shift: must be > 0 (the official default is 7.0), got {shift}.")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigmas = shift * u / (1.0 + (shift - 1.0) * u)
    if not reverse:
        sigmas = 1.0 - sigmas
    return sigmas.to(torch.float32)


@dataclass(frozen=True)
class SigmaSchedule:
    """The full N-step schedule and the window [start, end) of steps this run executes."""

    sigmas: torch.Tensor   # [N+1] float32, from 1 down to 0
    start: int
    end: int

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def active_steps(self) -> int:
        return self.end - self.start

    @property
    def start_sigma(self) -> float:
        return float(self.sigmas[self.start])

    def timestep(self, i: int) -> float:
        return float(self.sigmas[i]) * NUM_TRAIN_TIMESTEPS

    def indices(self) -> range:
        return range(self.start, self.end)


def plan_schedule(steps: int, shift: float, denoise: float = 1.0, start_step: int = 0,
                  end_step: int | None = None) -> SigmaSchedule:
    """Which steps of the N-step schedule run.

    `denoise` < 1 starts part-way (video-to-video): the last round(N*denoise) steps run, the
    input being noised to the sigma of the first of them. `start_step`/`end_step` pick the window
    explicitly (split sampling); the two ways of choosing the start cannot be combined.
    """
    _check_steps(steps)
    denoise = finite_number("denoise", denoise, "Give a number in (0, 1]; 1.0 means start from pure noise.")
    if not 0.0 < denoise <= 1.0:
        raise InvalidInputError(f"denoise: must be in (0, 1], got {denoise!r}; 1.0 means start from pure noise.")
    for name, value in (("start_step", start_step), ("end_step", end_step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInputError(f"{name}: expected a whole number, got {type(value).__name__} {value!r}.")
    end = steps if end_step is None else int(end_step)
    if not 0 <= start_step < steps:
        raise InvalidInputError(f"start_step: must be in [0, {steps - 1}] for steps={steps}, got {start_step}.")
    if not start_step < end <= steps:
        raise InvalidInputError(
            f"end_step: must be in [{start_step + 1}, {steps}] (after start_step={start_step}), got {end_step}.")
    start = int(start_step)
    if denoise < 1.0:
        if start_step:
            raise InvalidInputError(
                f"denoise={denoise} and start_step={start_step} both choose where sampling starts; set one "
                "(denoise=1.0 or start_step=0).")
        run = round(steps * denoise)
        if run < 1:
            raise InvalidInputError(
                f"denoise={denoise} with steps={steps} leaves no step to run; raise denoise to at least "
                f"{0.5 / steps:.3g} or use more steps.")
        start = steps - run
        if start >= end:
            raise InvalidInputError(
                f"denoise={denoise} starts at step {start}, at or after end_step={end}; raise denoise or end_step.")
    return SigmaSchedule(flow_sigmas(steps, shift), start, end)


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InvalidInputError(f"steps: must be a whole number from 1 to {MAX_STEPS} (the official default is 50), "
                                f"got {steps!r}.")
