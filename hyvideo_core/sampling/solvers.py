"""ODE solvers for the flow-matching sampler, in float32.

Convention (SPEC 5.1): x_sigma = (1 - sigma)*x0 + sigma*noise and the model predicts the velocity
v = noise - x0, so the data prediction is x0 = x - sigma*v.

- `euler`: x <- x + v*(sigma_next - sigma), the official scheduler.
- `dpm++2m`: DPM-Solver++(2M), multistep second order in data-prediction form with
  alpha = 1 - sigma and lambda = log(alpha/sigma) (midpoint variant). Its first step and any step
  landing on sigma = 0 are first order, as in diffusers' DPMSolverMultistepScheduler with
  final_sigmas_type="zero".
"""
from __future__ import annotations

import math
from typing import Protocol

import torch

from ..errors import InvalidInputError


class Solver(Protocol):
    name: str

    def reset(self) -> None:
        """Forget any history; called at the start of every run."""

    def step(self, x: torch.Tensor, v: torch.Tensor, i: int, sigmas: torch.Tensor) -> torch.Tensor:
        """Advance x (float32) from sigmas[i] to sigmas[i+1] given the velocity v at sigmas[i]."""


class EulerSolver:
    name = "euler"

    def reset(self) -> None:
        pass

    def step(self, x, v, i, sigmas):
        dt = float(sigmas[i + 1]) - float(sigmas[i])
        return x.float() + v.float() * dt


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha/sigma); -inf at sigma = 1 (pure noise)."""
    return -math.inf if sigma >= 1.0 else math.log((1.0 - sigma) / sigma)


class DPMPP2MSolver:
    name = "dpm++2m"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[int, torch.Tensor] | None = None  # (step index, x0 prediction there)

    def step(self, x, v, i, sigmas):
        s, t = float(sigmas[i]), float(sigmas[i + 1])
        x = x.float()
        x0 = x - v.float() * s
        prev, self._prev = self._prev, (i, x0)
        if t <= 0.0:
            return x0  # the exact limit of the update at sigma = 0
        # alpha_t*(1 - exp(-h)) written without lambda, so it stays finite at sigma_s = 1.
        data_weight = (1.0 - t) - t * (1.0 - s) / s
        d = x0
        if prev is not None and prev[0] == i - 1:
            d = self._midpoint(x0, prev[1], float(sigmas[i - 1]), s, t)
        return x * (t / s) + d * data_weight

    @staticmethod
    def _midpoint(x0, x0_prev, s_prev: float, s: float, t: float) -> torch.Tensor:
        lam_prev, lam_s, lam_t = _log_snr(s_prev), _log_snr(s), _log_snr(t)
        if math.isinf(lam_prev):
            return x0  # the previous step came from pure noise: r = inf, the correction vanishes
        r = (lam_s - lam_prev) / (lam_t - lam_s)
        return x0 + (x0 - x0_prev) * (0.5 / r)


SOLVERS = {"euler": EulerSolver, "dpm++2m": DPMPP2MSolver}


def make_solver(name: str) -> Solver:
    try:
        return SOLVERS[name]()
    except KeyError:
        raise InvalidInputError(f"solver: unknown {name!r}; choose one of {sorted(SOLVERS)}.") from None
