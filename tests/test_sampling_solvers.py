"""Euler and DPM++(2M) step by step against diffusers' schedulers (independent oracle)."""
from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.sampling import flow_sigmas, make_solver

STEPS = 12
SHAPE = (1, 16, 2, 4, 6)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g), [torch.randn(SHAPE, generator=g) for _ in range(STEPS)]


def _run_ours(name, x, velocities, sigmas):
    solver = make_solver(name)
    solver.reset()
    out = []
    for i, v in enumerate(velocities):
        x = solver.step(x, v, i, sigmas)
        out.append(x)
    return out


def test_euler_matches_diffusers_flow_match_euler_step_by_step():
    x, vs = _inputs()
    ref = FlowMatchEulerDiscreteScheduler(shift=7.0)
    ref.set_timesteps(sigmas=torch.linspace(1, 0, STEPS + 1)[:-1].numpy())
    ours_sigmas = flow_sigmas(STEPS, 7.0)
    torch.testing.assert_close(ref.sigmas, ours_sigmas, atol=1e-6, rtol=0)
    torch.testing.assert_close(ref.timesteps, ours_sigmas[:-1] * 1000, atol=1e-3, rtol=0)
    xr = x.clone()
    for i, ours in enumerate(_run_ours("euler", x, vs, ours_sigmas)):
        xr = ref.step(vs[i], ref.timesteps[i], xr).prev_sample
        torch.testing.assert_close(ours, xr, atol=1e-6, rtol=0, msg=f"step {i}")


def _dpm_reference():
    return DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=7.0,
                                       algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                       final_sigmas_type="zero")


@pytest.mark.parametrize("sigma_source", ["diffusers", "official"])
def test_dpmpp_2m_matches_diffusers_step_by_step(sigma_source):
    """Same sigmas on both sides: diffusers' own flow schedule, or ours (starting at sigma = 1)."""
    x, vs = _inputs(1)
    ref = _dpm_reference()
    ref.set_timesteps(STEPS)
    if sigma_source == "official":
        ref.sigmas = flow_sigmas(STEPS, 7.0)
        ref.timesteps = ref.sigmas[:-1] * 1000
    sigmas = ref.sigmas.clone()
    xr = x.clone()
    for i, ours in enumerate(_run_ours("dpm++2m", x, vs, sigmas)):
        xr = ref.step(vs[i], ref.timesteps[i], xr).prev_sample
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, xr, atol=1e-5, rtol=1e-5, msg=f"step {i}")


def test_dpmpp_2m_is_second_order_not_euler():
    x, vs = _inputs(2)
    sigmas = flow_sigmas(STEPS, 7.0)
    euler, dpm = _run_ours("euler", x, vs, sigmas), _run_ours("dpm++2m", x, vs, sigmas)
    torch.testing.assert_close(dpm[0], euler[0], atol=1e-6, rtol=0)   # first step is first order
    assert (dpm[5] - euler[5]).abs().max() > 1e-2


def test_dpmpp_2m_reset_forgets_history():
    x, vs = _inputs(3)
    sigmas = flow_sigmas(STEPS, 7.0)
    solver = make_solver("dpm++2m")
    solver.step(x, vs[0], 0, sigmas)
    solver.reset()
    fresh = make_solver("dpm++2m")
    torch.testing.assert_close(solver.step(x, vs[1], 1, sigmas), fresh.step(x, vs[1], 1, sigmas), atol=0, rtol=0)


def test_unknown_solver():
    with pytest.raises(InvalidInputError, match="solver"):
        make_solver("heun")
