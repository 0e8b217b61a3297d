"""UniPC and DPM++(2M) SDE against diffusers' schedulers (independent oracle) on real trajectories of
the golden tiny DiT, their seeded noise, and whole `sample()` runs with every solver."""
from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.run.choices import SOLVER_NAMES
from hyvideo_core.sampling import (LATENT_SCALE, SOLVERS, SamplingOptions, make_solver, plan_schedule, sample,
                                   seeded_noise)
from hyvideo_core.sampling.solvers import sde_noise

from test_sampling_support import SIZE, embeds, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 16, 3, 6, 8)   # the latent of SIZE
GUIDANCE = 6000.0          # embedded guidance 6 (x1000)
ATOL = 1e-5                # per step, max abs


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def velocity(model):
    """The tiny DiT's velocity at (x, sigma): nonlinear in x, float32, deterministic."""
    p = embeds(model.config, negative=False).positive

    def v(x: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            return model(x, sigma * 1000.0, p.text_states, p.text_mask, p.pooled, GUIDANCE).float()
    return v


def unipc_reference(sigmas: torch.Tensor) -> UniPCMultistepScheduler:
    """Fed our sigmas (without the final 0, which final_sigmas_type="zero" appends)."""
    ref = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, solver_type="bh2",
                                  solver_order=2, predict_x0=True, lower_order_final=True, final_sigmas_type="zero")
    ref.set_timesteps(sigmas=sigmas[:-1].numpy())
    assert len(ref.sigmas) == len(sigmas)
    return ref


def sde_reference(sigmas: torch.Tensor) -> DPMSolverMultistepScheduler:
    """diffusers 0.42's DPMSolverMultistepScheduler.set_timesteps takes no sigmas: set ours after it."""
    ref = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2,
                                      prediction_type="flow_prediction", use_flow_sigmas=True,
                                      final_sigmas_type="zero", solver_type="midpoint")
    ref.set_timesteps(len(sigmas) - 1)
    ref.sigmas = sigmas.clone()
    ref.timesteps = sigmas[:-1] * 1000
    return ref


def start_latent(schedule, seed: int) -> torch.Tensor:
    """Pure noise, or (denoise < 1) a clean latent noised to the first active sigma."""
    noise = seeded_noise(SHAPE, seed)
    sigma = schedule.start_sigma
    clean = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 100))
    return noise if sigma == 1.0 else clean * (1.0 - sigma) + noise * sigma


def run_both(name, velocity, steps, denoise, seed=0, solver_seed=0):
    """Independent trajectories (each side calls the model at its own x); the per-step outputs."""
    schedule = plan_schedule(steps, 7.0, denoise)
    sigmas, start = schedule.sigmas, schedule.start
    tail = sigmas[start:]
    ref = unipc_reference(tail) if name == "unipc" else sde_reference(tail)
    solver = make_solver(name, seed=solver_seed)
    ours = theirs = start_latent(schedule, seed)
    out = []
    for k, i in enumerate(schedule.indices()):
        sigma = float(sigmas[i])
        ours = solver.step(ours, velocity(ours, sigma), i, sigmas)
        extra = {"variance_noise": sde_noise(SHAPE, solver_seed, i)} if name == "dpm++2m_sde" else {}
        theirs = ref.step(velocity(theirs, sigma), ref.timesteps[k], theirs, **extra).prev_sample
        out.append((ours, theirs))
    return out


@pytest.mark.parametrize("name", ["unipc", "dpm++2m_sde"])
@pytest.mark.parametrize("steps,denoise", [(8, 1.0), (12, 1.0), (12, 0.6)])
def test_matches_diffusers_step_by_step_on_the_tiny_dit(name, velocity, steps, denoise):
    pairs = run_both(name, velocity, steps, denoise, seed=steps, solver_seed=3)
    assert len(pairs) == round(steps * denoise)
    for k, (ours, theirs) in enumerate(pairs):
        assert torch.isfinite(ours).all()
        err = float((ours - theirs).abs().max())
        assert err <= ATOL, f"{name} step {k + 1}/{len(pairs)}: max abs {err:.3g}"
    assert float(pairs[-1][0].abs().max()) > 0.1   # a real trajectory, not a collapse to zero


def _final(name, velocity, steps=12, seed=0):
    schedule = plan_schedule(steps, 7.0)
    solver = make_solver(name, seed=seed)
    x = start_latent(schedule, 0)
    for i in schedule.indices():
        x = solver.step(x, velocity(x, float(schedule.sigmas[i])), i, schedule.sigmas)
    return x


def test_unipc_corrector_changes_the_result(velocity):
    """Without UniC, UniPC's predictor is DPM-Solver++(2M); the corrector must make a difference."""
    assert float((_final("unipc", velocity) - _final("dpm++2m", velocity)).abs().max()) > 1e-3


def test_sde_same_seed_same_result_other_seed_differs(velocity):
    a, b, c = _final("dpm++2m_sde", velocity, seed=4), _final("dpm++2m_sde", velocity, seed=4), \
        _final("dpm++2m_sde", velocity, seed=5)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-2
    assert float((a - _final("dpm++2m", velocity)).abs().max()) > 1e-2   # the noise is really injected


def test_sde_noise_is_keyed_by_seed_step_and_sample():
    a = sde_noise((2, 4, 3, 5), 7, 3)
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, sde_noise((2, 4, 3, 5), 7, 3))
    torch.testing.assert_close(a[1:], sde_noise((1, 4, 3, 5), 8, 3), atol=0, rtol=0)   # sample b: seed + b
    assert not torch.equal(a, sde_noise((2, 4, 3, 5), 7, 4))
    assert not torch.equal(sde_noise((1, 4, 3, 5), 1, 0), sde_noise((1, 4, 3, 5), 0, 1))
    assert not torch.equal(a[:1], seeded_noise((1, 4, 3, 5), 7))   # unrelated to the initial noise
    wrap = sde_noise((2, 4, 3, 5), 2**64 - 1, 0)   # seed + b wraps around like seeded_noise
    torch.testing.assert_close(wrap[1:], sde_noise((1, 4, 3, 5), 0, 0), atol=0, rtol=0)
    big = sde_noise((1, 16, 32, 32), 11, 2)
    assert abs(float(big.mean())) < 0.03 and abs(float(big.std()) - 1.0) < 0.03


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sde_step_is_the_same_on_cuda():
    schedule = plan_schedule(6, 7.0)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    cpu = make_solver("dpm++2m_sde", seed=9).step(x, v, 2, schedule.sigmas)
    gpu = make_solver("dpm++2m_sde", seed=9).step(x.cuda(), v.cuda(), 2, schedule.sigmas)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["unipc", "dpm++2m_sde"])
def test_reset_keeps_no_tensors_and_forgets_history(name):
    sigmas = plan_schedule(6, 7.0).sigmas
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)

    def after_three_steps():
        solver = make_solver(name, seed=2)
        for i in range(3):
            solver.step(x, v, i, sigmas)
        return solver

    fresh = make_solver(name, seed=2).step(x, v, 3, sigmas)
    assert not torch.equal(after_three_steps().step(x, v, 3, sigmas), fresh)   # the history is used
    solver = after_three_steps()
    assert list(_tensors(vars(solver)))
    solver.reset()
    assert not list(_tensors(vars(solver)))
    torch.testing.assert_close(solver.step(x, v, 3, sigmas), fresh, atol=0, rtol=0)


def _tensors(value):
    """Every tensor reachable from a solver's attributes (tuples, lists, dicts, dataclasses)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif hasattr(value, "__dataclass_fields__"):
        yield from _tensors(vars(value))


def test_every_solver_is_a_choice_and_unknown_names_list_them():
    assert set(SOLVER_NAMES) == set(SOLVERS) == {"euler", "dpm++2m", "unipc", "dpm++2m_sde"}
    with pytest.raises(InvalidInputError, match="solver") as error:
        make_solver("heun")
    assert all(repr(name) in str(error.value) for name in SOLVERS)
    with pytest.raises(InvalidInputError, match="seed"):
        make_solver("dpm++2m_sde", seed=-1)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_sample_runs_with_every_solver(model, name):
    e = embeds(model.config, negative=False)
    result = sample(model, e, SamplingOptions(steps=4, seed=5, solver=name), **SIZE)
    assert result.latent.shape == SHAPE and torch.isfinite(result.latent).all()
    assert result.forwards == 4


@pytest.mark.parametrize("name", ["unipc", "dpm++2m_sde"])
def test_sample_equals_the_diffusers_trajectory(model, velocity, name):
    """The whole loop: its noise, its sigmas and (for the SDE) the run's seed reaching the solver."""
    steps, seed = 5, 21
    result = sample(model, embeds(model.config, negative=False), SamplingOptions(steps=steps, seed=seed, solver=name),
                    **SIZE)
    schedule = result.schedule
    ref = unipc_reference(schedule.sigmas) if name == "unipc" else sde_reference(schedule.sigmas)
    x = seeded_noise(SHAPE, seed)
    for i in schedule.indices():
        extra = {"variance_noise": sde_noise(SHAPE, seed, i)} if name == "dpm++2m_sde" else {}
        x = ref.step(velocity(x, float(schedule.sigmas[i])), ref.timesteps[i], x, **extra).prev_sample
    torch.testing.assert_close(result.latent, x / LATENT_SCALE, atol=ATOL, rtol=0)
