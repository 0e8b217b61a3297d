"""Latent size planning (snapping is reported), seeded noise, and the LATENT convention."""
from __future__ import annotations

import logging

import pytest
import torch

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.sampling import LATENT_SCALE, plan_latent, seeded_noise, to_model_space, to_raw_latent
from hyvideo_core.sampling.noise import noise_to_sigma, plan_from_latent


@pytest.mark.parametrize("size, shape", [
    ((1280, 720, 129), (1, 16, 33, 90, 160)),
    ((960, 544, 129), (1, 16, 33, 68, 120)),
])
def test_official_sizes_need_no_snapping(size, shape, caplog):
    with caplog.at_level(logging.WARNING):
        plan = plan_latent(*size)
    assert plan.shape == shape and plan.adjustments == () and not caplog.records


def test_snapping_is_reported_and_logged(caplog):
    with caplog.at_level(logging.WARNING):
        plan = plan_latent(850, 481, 75, batch=2)
    assert (plan.width, plan.height, plan.frames) == (864, 496, 73)
    assert plan.shape == (2, 16, 19, 62, 108)
    assert len(plan.adjustments) == 2
    assert "850x481" in plan.adjustments[0] and "75" in plan.adjustments[1]
    assert len(caplog.records) == 2


@pytest.mark.parametrize("args", [(64, 64, 0), (0, 64, 9), (64, -16, 9), (64, 64, 9, 0), (64.0, 64, 9)])
def test_bad_sizes(args):
    with pytest.raises(InvalidInputError):
        plan_latent(*args)


def test_latent_shape_checks():
    assert plan_from_latent((1, 16, 3, 6, 8)).frames == 9
    with pytest.raises(InvalidInputError, match="16"):
        plan_from_latent((1, 4, 3, 6, 8))
    with pytest.raises(InvalidInputError, match="even"):
        plan_from_latent((1, 16, 3, 5, 8))


def test_seeded_noise_is_cpu_float32_and_per_sample():
    a = seeded_noise((2, 16, 3, 4, 4), seed=5)
    assert a.dtype == torch.float32
    assert torch.equal(a, seeded_noise((2, 16, 3, 4, 4), seed=5))
    assert not torch.equal(a, seeded_noise((2, 16, 3, 4, 4), seed=6))
    # sample i is seed+i, so a batch reproduces single runs
    assert torch.equal(a[1:], seeded_noise((1, 16, 3, 4, 4), seed=6))
    # drawn on a CPU generator whatever the device asked for
    g = torch.Generator("cpu").manual_seed(5)
    assert torch.equal(a[0], torch.randn((16, 3, 4, 4), generator=g))
    with pytest.raises(InvalidInputError, match="seed"):
        seeded_noise((1, 16, 1, 2, 2), seed=-1)


def test_noising_follows_flow_convention():
    x0, eps = torch.randn(1, 16, 1, 2, 2), torch.randn(1, 16, 1, 2, 2)
    torch.testing.assert_close(noise_to_sigma(x0, eps, 0.25), 0.75 * x0 + 0.25 * eps)


def test_latent_convention_round_trip():
    raw = torch.randn(1, 16, 2, 2, 2)
    torch.testing.assert_close(to_model_space(raw), raw * 0.476986)
    torch.testing.assert_close(to_raw_latent(to_model_space(raw)), raw)
    assert LATENT_SCALE == 0.476986
