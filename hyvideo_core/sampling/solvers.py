"""ODE solvers for the flow-matching sampler, in float32.

Convention (SPEC 5.1): x_sigma = (1 - sigma)*x0 + sigma*noise and the model predicts the velocity
v = noise - x0, so the data prediction is x0 = x - sigma*v.

- `euler`: x <- x + v*(sigma_next - sigma), the official scheduler.
- `dpm++2m`: DPM-Solver++(2M), multistep second order in data-prediction form with
  alpha = 1 - sigma and lambda = log(alpha/sigma) (midpoint variant). Its first step and any step
  landing on sigma = 0 are first order, as in diffusers' DPMSolverMultistepScheduler with
  final_sigmas_type="zero".
- `dpm++2m_sde`: DPM-Solver++(2M) SDE (midpoint), as diffusers' algorithm_type="sde-dpmsolver++": the
  same multistep x0 estimate, but each step also injects fresh noise (`sde_noise`, seeded by
  (seed, step)), so it needs a seed.
- `unipc`: UniPC bh2, order 2 (solver_unipc.py).
"""
from __future__ import annotations

import hashlib
import math
from typing import Protocol

import torch

from ..errors import InvalidInputError
from .noise import MAX_SEED, check_seed
from .solver_unipc import UniPCSolver


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
            return x0  # the exact limit of the update at sigma = 0 (for the SDE too: e^-h = 0, sigma_t = 0)
        return self._update(x, _multistep_x0(x0, prev, i, sigmas), s, t, i)

    def _update(self, x, d, s: float, t: float, i: int) -> torch.Tensor:
        # alpha_t*(1 - exp(-h)) written without lambda, so it stays finite at sigma_s = 1.
        data_weight = (1.0 - t) - t * (1.0 - s) / s
        return x * (t / s) + d * data_weight


def _multistep_x0(x0, prev, i: int, sigmas) -> torch.Tensor:
    """The 2M estimate of x0 over the step (midpoint variant): x0 extrapolated with the previous
    step's x0, or x0 alone when there is none (first step of a run)."""
    if prev is None or prev[0] != i - 1:
        return x0
    lam_prev, lam_s, lam_t = (_log_snr(float(sigmas[j])) for j in (i - 1, i, i + 1))
    if math.isinf(lam_prev):
        return x0  # the previous step came from pure noise: r = inf, the correction vanishes
    r = (lam_s - lam_prev) / (lam_t - lam_s)
    return x0 + (x0 - prev[1]) * (0.5 / r)


def sde_noise(shape, seed: int, step: int) -> torch.Tensor:
    """Standard normal float32 noise for one SDE step, drawn on the CPU so that a (seed, step) gives
    the same tensor on any device and on every rank of a parallel run.

    Sample b uses a generator keyed by (seed + b, step), like `seeded_noise` seeds sample b with
    seed + b, so a video does not change with the batch it is in. The key is hashed so that the
    step streams share nothing with the initial noise (seeded with the seed itself) or with each
    other (seed 1 at step 0 is unrelated to seed 0 at step 1). `step` is the index in the whole
    schedule, so a run split with start_step/end_step draws the same noise as one run."""
    samples = []
    for b in range(shape[0]):
        key = f"hyvideo sde noise: seed {(seed + b) % (MAX_SEED + 1)} step {step}".encode()
        generator = torch.Generator("cpu").manual_seed(
            int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))
        samples.append(torch.randn(tuple(shape[1:]), generator=generator, dtype=torch.float32))
    return torch.stack(samples)


class DPMPP2MSDESolver(DPMPP2MSolver):
    """x_t = (sigma_t/sigma_s)*e^-h * x + alpha_t*(1 - e^-2h) * D + sigma_t*sqrt(1 - e^-2h) * z with
    h = lambda_t - lambda_s and D the 2M x0 estimate (as in the ODE solver): the data term is pulled
    in twice as hard as in the ODE and the lost variance comes back as fresh noise z."""

    name = "dpm++2m_sde"
    stochastic = True    # make_solver passes the run's seed

    def __init__(self, seed: int = 0) -> None:
        self.seed = check_seed(seed)
        super().__init__()

    def _update(self, x, d, s: float, t: float, i: int) -> torch.Tensor:
        # e^-h = (sigma_t/alpha_t)*(alpha_s/sigma_s), written without lambda: 0 from pure noise (s = 1).
        decay = t * (1.0 - s) / ((1.0 - t) * s)
        kept = 1.0 - decay * decay
        noise = sde_noise(x.shape, self.seed, i).to(x.device)
        return x * (t / s * decay) + d * ((1.0 - t) * kept) + noise * (t * math.sqrt(kept))


SOLVERS = {"euler": EulerSolver, "dpm++2m": DPMPP2MSolver, "dpm++2m_sde": DPMPP2MSDESolver, "unipc": UniPCSolver}


def make_solver(name: str, seed: int = 0) -> Solver:
    """A fresh solver; `seed` reaches the stochastic ones (their per-step noise)."""
    try:
        kind = SOLVERS[name]
    except KeyError:
        raise InvalidInputError(f"solver: unknown {name!r}; choose one of {sorted(SOLVERS)}.") from None
    return kind(seed=seed) if getattr(kind, "stochastic", False) else kind()
