"""UniPC (Zhao et al. 2023), multistep order 2, B(h) = e^h - 1 ("bh2"), in data-prediction form.

Convention (SPEC 5.1): x_sigma = (1 - sigma)*x0 + sigma*noise, alpha = 1 - sigma, the model predicts
v = noise - x0 so x0 = x - sigma*v, and lambda = log(alpha/sigma) is the log-SNR.

Each step is a corrector (UniC) then a predictor (UniP):
- UniC refines the x the previous predictor produced, using the x0 just predicted at that x. It
  costs no model call: the model is not re-run at the corrected point, and the x0 fed to the
  predictor is the one from the uncorrected x (as in the paper and in diffusers).
- UniP-2 is the DPM-Solver++(2M) step; the first step, and (lower_order_final) the last one, are
  first order, and the step that lands on sigma = 0 returns x0.

This reproduces diffusers' UniPCMultistepScheduler(prediction_type="flow_prediction",
use_flow_sigmas=True, solver_type="bh2", solver_order=2, predict_x0=True, lower_order_final=True,
final_sigmas_type="zero"). Like diffusers, pure noise (sigma = 1, lambda = -inf) is taken as
sigma = 1 - 1e-6 (in float32): the second-order corrector solves a 2x2 system in lambda
differences, which has no finite form at lambda = -inf.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The sigma diffusers uses for pure noise, as it stores it (float32): lambda there is about -13.8,
# and the first second-order steps depend on it (1 - 1e-5 instead moves a 12-step run by ~5e-5).
_PURE_NOISE_SIGMA = float(torch.tensor(1.0 - 1e-6, dtype=torch.float32))


def _sigma(sigmas: torch.Tensor, j: int) -> float:
    s = float(sigmas[j])
    return _PURE_NOISE_SIGMA if abs(s - 1.0) < 1e-6 else s


def _log_snr(sigma: float) -> float:
    return math.log((1.0 - sigma) / sigma)


@dataclass
class _Visit:
    """What step i leaves for step i+1: the corrected x there and the x0 predictions at i and i-1."""
    index: int
    x: torch.Tensor
    x0: torch.Tensor
    x0_before: torch.Tensor | None     # x0 at index-1 (needed by a second-order corrector)
    order: int                         # the order of the predictor run from x


class UniPCSolver:
    name = "unipc"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._last: _Visit | None = None

    def step(self, x, v, i, sigmas):
        x = x.float()
        s = _sigma(sigmas, i)
        x0 = x - v.float() * s
        last = self._last if self._last is not None and self._last.index == i - 1 else None
        self._last = None      # hold at most one visit, also if this step fails
        if last is not None:
            x = self._correct(x, x0, last, sigmas)
        # Second order needs the previous x0; lower_order_final: the last step is first order.
        order = 2 if last is not None and len(sigmas) - 1 - i >= 2 else 1
        x0_before = last.x0 if last is not None else None
        self._last = _Visit(i, x, x0, x0_before, order)
        if float(sigmas[i + 1]) <= 0.0:
            return x0          # the exact limit of the first-order update at sigma = 0
        return self._predict(x, x0, x0_before if order == 2 else None, i, sigmas)

    @staticmethod
    def _predict(x, x0, x0_before, i, sigmas) -> torch.Tensor:
        """UniP from sigmas[i] to sigmas[i+1]; second order when x0_before (at i-1) is given."""
        s, t = _sigma(sigmas, i), _sigma(sigmas, i + 1)
        h = _log_snr(t) - _log_snr(s)
        weight = -(1.0 - t) * math.expm1(-h)       # alpha_t*(1 - e^-h) = alpha_t*B(h) for bh2
        d = x0
        if x0_before is not None:
            r = (_log_snr(_sigma(sigmas, i - 1)) - _log_snr(s)) / h
            d = x0 + (x0_before - x0) * (0.5 / r)  # rho_p = 1/2: the order-2 UniP coefficient
        return x * (t / s) + d * weight

    @staticmethod
    def _correct(x, x0, last: _Visit, sigmas) -> torch.Tensor:
        """UniC: redo the last predictor's step (from last.x at sigma_s to sigma_t) with the x0
        now known at its end point, at the order that predictor had."""
        s, t = _sigma(sigmas, last.index), _sigma(sigmas, last.index + 1)
        h = _log_snr(t) - _log_snr(s)
        b_h = math.expm1(-h)                   # B(h) of bh2, in the data-prediction sign (-h)
        weight = -(1.0 - t) * b_h
        change = x0 - last.x0                  # D1_t: how far x0 moved over the step
        if last.order == 1:
            d = last.x0 + change * 0.5         # rho_c = 1/2: order-1 UniC
        else:
            r = (_log_snr(_sigma(sigmas, last.index - 1)) - _log_snr(s)) / h
            rho_1, rho_2 = _corrector_weights(-h, b_h, r)
            d = last.x0 + (last.x0_before - last.x0) * (rho_1 / r) + change * rho_2
        return last.x * (t / s) + d * weight


def _corrector_weights(hh: float, b_h: float, r: float) -> tuple[float, float]:
    """The order-2 UniC weights: solve [[1, 1], [r, 1]] rho = g with g_k = k!*phi_(k+1)(hh)*hh/B(h),
    the Taylor-matching conditions of the paper (r = the earlier point's lambda offset, in units of h)."""
    phi_2 = math.expm1(hh) / hh - 1.0          # hh*phi_2(hh)
    phi_3 = phi_2 / hh - 0.5                   # hh*phi_3(hh)
    g_1, g_2 = phi_2 / b_h, 2.0 * phi_3 / b_h
    rho_1 = (g_1 - g_2) / (1.0 - r)
    return rho_1, g_1 - rho_1
