"""Sigma schedule against the reference scheduler's golden values, and the run window."""
from __future__ import annotations

import pytest
import torch

from conftest import golden_json, golden_tensors
from hyvideo_core.errors import InvalidInputError
from hyvideo_core.sampling import SigmaSchedule, flow_sigmas, make_solver, plan_schedule

SCHEDULES = golden_json("scheduler", "schedules.json")


@pytest.mark.parametrize("case", SCHEDULES["schedules"], ids=lambda c: c["name"])
def test_golden_schedules(case):
    stored = golden_tensors("scheduler", "schedules.safetensors")
    sigmas = flow_sigmas(case["steps"], case["shift"], reverse=case["reverse"])
    assert sigmas.dtype == torch.float32
    torch.testing.assert_close(sigmas, stored[f"{case['name']}.sigmas"], atol=1e-6, rtol=0)
    schedule = SigmaSchedule(sigmas, 0, case["steps"])
    timesteps = torch.tensor([schedule.timestep(i) for i in schedule.indices()])  # what the DiT is given
    torch.testing.assert_close(timesteps, stored[f"{case['name']}.timesteps"], atol=1e-3, rtol=0)


def test_golden_euler_steps():
    spec = SCHEDULES["euler_step"]
    data = golden_tensors("scheduler", "euler_step.safetensors")
    match = next(c for c in SCHEDULES["schedules"] if c["name"] == spec["schedule"])
    sigmas = flow_sigmas(match["steps"], match["shift"])
    solver = make_solver("euler")
    for step in spec["steps"]:
        i = step["step_index"]
        assert float(sigmas[i]) == pytest.approx(step["sigma"], abs=1e-7)
        out = solver.step(data["sample"], data["model_output"], i, sigmas)
        torch.testing.assert_close(out, data[step["tensor"]], atol=1e-6, rtol=0)


def test_default_schedule_runs_every_step_from_pure_noise():
    s = plan_schedule(50, 7.0)
    assert (s.start, s.end, s.active_steps, s.start_sigma) == (0, 50, 50, 1.0)
    assert s.timestep(49) == pytest.approx(125.0)
    assert float(s.sigmas[-1]) == 0.0


def test_denoise_starts_part_way_and_runs_the_last_steps():
    s = plan_schedule(10, 7.0, denoise=0.3)
    assert (s.start, s.end) == (7, 10)
    assert s.start_sigma == pytest.approx(float(flow_sigmas(10, 7.0)[7]))
    assert plan_schedule(100, 7.0, denoise=0.29).active_steps == 29  # round, not int() truncation


def test_start_and_end_step_window():
    s = plan_schedule(20, 7.0, start_step=5, end_step=12)
    assert list(s.indices()) == list(range(5, 12))


@pytest.mark.parametrize("kwargs, word", [
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"),
    ({"denoise": 0.0}, "denoise"), ({"denoise": 1.2}, "denoise"), ({"denoise": -0.1}, "denoise"),
    ({"denoise": 0.01}, "denoise"),                       # rounds to zero steps at 10 steps
    ({"shift": 0.0}, "shift"),
    ({"start_step": 10}, "start_step"), ({"end_step": 0}, "end_step"), ({"end_step": 11}, "end_step"),
    ({"denoise": 0.5, "start_step": 2}, "start_step"),
])
def test_bad_schedule_arguments(kwargs, word):
    args = {"steps": 10, "shift": 7.0, **kwargs}
    with pytest.raises(InvalidInputError, match=word):
        plan_schedule(**args)
