"""RIFLEx (SPEC_NEXT 3): the k-th temporal RoPE frequency becomes 0.9*2*pi/T past its period N_k.

The oracle is the formula written out here (diffusers 0.42 has no RIFLEx helper: no match for
"riflex" in its package). The run option is installed on the model for the run and restored.
"""
from __future__ import annotations

import math

import pytest
import torch

from hyvideo_core.errors import CancelledError, InvalidInputError
from hyvideo_core.model.rope import RopeOptions, riflex_applies, riflex_period, rope_freqs
from hyvideo_core.sampling import SamplingHooks, SamplingOptions, sample

from test_sampling_support import embeds, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

HV_DIMS = (16, 56, 56)       # HunyuanVideo 13B: temporal rope dim 16, theta 256


def formula_freqs(grid, dims, theta, k):
    """Every token's angles from the written-out rule, float64, [T*H*W, sum(dims)/2]."""
    t_len = grid[0]
    rows = []
    for t in range(grid[0]):
        for h in range(grid[1]):
            for w in range(grid[2]):
                row = []
                for axis, (pos, dim) in enumerate(zip((t, h, w), dims)):
                    for j in range(dim // 2):                     # 0-based; k is 1-based
                        freq = theta ** (-2 * j / dim)
                        if axis == 0 and k and j == k - 1 and t_len > round(2 * math.pi / freq):
                            freq = 0.9 * 2 * math.pi / t_len
                        row.append(pos * freq)
                rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def angles(freqs: torch.Tensor) -> torch.Tensor:
    return torch.angle(freqs[:, 0, :]).double()


def wrapped_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Angles equal modulo 2*pi (float32 tables)."""
    diff = torch.remainder(actual - expected + math.pi, 2 * math.pi) - math.pi
    assert float(diff.abs().max()) < 2e-4


def test_hunyuan_periods_and_k4_is_50_latent_frames():
    assert [riflex_period(j, 16, 256.0) for j in range(1, 9)] == [6, 13, 25, 50, 101, 201, 402, 804]
    assert not riflex_applies(4, 50, 16) and riflex_applies(4, 51, 16) and not riflex_applies(0, 500, 16)


def test_riflex_freqs_equal_the_formula_and_only_the_kth_temporal_frequency_changes():
    grid = (66, 2, 3)             # RIFLEx's demo length: 261 frames = 66 latent frames
    plain = rope_freqs(grid, HV_DIMS, 256.0)
    fixed = rope_freqs(grid, HV_DIMS, 256.0, riflex_index=4)
    wrapped_close(angles(fixed), formula_freqs(grid, HV_DIMS, 256.0, 4))
    wrapped_close(angles(plain), formula_freqs(grid, HV_DIMS, 256.0, 0))
    changed = [c for c in range(fixed.shape[-1]) if not torch.equal(fixed[..., c], plain[..., c])]
    assert changed == [3]                                         # temporal column k-1 = 3
    t = torch.arange(66, dtype=torch.float64).repeat_interleave(6)
    torch.testing.assert_close(angles(fixed)[:, 3], torch.remainder(t * 0.9 * 2 * math.pi / 66 + math.pi,
                                                                    2 * math.pi) - math.pi, atol=2e-4, rtol=0)
    assert fixed.shape == plain.shape and fixed.dtype == plain.dtype == torch.complex64


def test_below_the_period_the_table_is_the_plain_one():
    for frames in (1, 33, 50):
        grid = (frames, 2, 2)
        assert torch.equal(rope_freqs(grid, HV_DIMS, 256.0, riflex_index=4), rope_freqs(grid, HV_DIMS, 256.0))
    # another index with its own period: k = 2 (N = 13)
    assert torch.equal(rope_freqs((13, 1, 1), HV_DIMS, riflex_index=2), rope_freqs((13, 1, 1), HV_DIMS))
    assert not torch.equal(rope_freqs((14, 1, 1), HV_DIMS, riflex_index=2), rope_freqs((14, 1, 1), HV_DIMS))


def test_the_freq_cache_keeps_plain_and_riflex_tables_apart():
    grid = (60, 1, 2)
    a = rope_freqs(grid, HV_DIMS)
    b = rope_freqs(grid, HV_DIMS, riflex_index=4)
    c = rope_freqs(grid, HV_DIMS)
    assert a is c and not torch.equal(a, b)


@pytest.mark.parametrize("bad", [-1, 9, True, 2.0, "4"])
def test_bad_riflex_index_is_refused_naming_it(bad):
    with pytest.raises(InvalidInputError, match="riflex_index"):
        rope_freqs((60, 1, 1), HV_DIMS, riflex_index=bad)


# -- in the sampling loop: installed for the run, restored after --------------------------------------
LONG = {"width": 16, "height": 16}           # 1 image token per latent frame


@pytest.fixture(scope="module")
def model():
    return tiny_model(rope_dims=(16, 8, 8))  # HunyuanVideo's temporal dim: N_4 = 50 latent frames


def test_sampling_with_riflex_past_the_period_equals_the_model_with_its_rope_options_set(model):
    e = embeds(model.config, negative=False)
    options = SamplingOptions(steps=2, seed=1)
    plain = sample(model, e, options, frames=201, **LONG)                    # 51 latent frames
    fixed = sample(model, e, SamplingOptions(steps=2, seed=1, riflex_index=4), frames=201, **LONG)
    assert model.rope_options == RopeOptions()                                # restored
    model.rope_options = RopeOptions(riflex_index=4)
    try:
        by_hand = sample(model, e, options, frames=201, **LONG)
    finally:
        model.rope_options = RopeOptions()
    assert torch.equal(fixed.latent, by_hand.latent)
    assert torch.isfinite(fixed.latent).all() and (fixed.latent - plain.latent).abs().max() > 1e-4
    assert any("riflex_index=4" in n for n in plain.notes)                    # the suggestion when off
    assert not any("riflex" in n for n in fixed.notes)


def test_riflex_below_the_period_is_bit_identical_and_noted(model):
    e = embeds(model.config, negative=False)
    plain = sample(model, e, SamplingOptions(steps=2, seed=2), frames=129, **LONG)      # 33 latent frames
    asked = sample(model, e, SamplingOptions(steps=2, seed=2, riflex_index=4), frames=129, **LONG)
    assert torch.equal(plain.latent, asked.latent)
    assert any("riflex_index=4 changes nothing at 33 latent frames" in n for n in asked.notes)
    assert not any("riflex" in n for n in plain.notes)          # 33 latent frames: nothing to suggest
    longer = sample(model, e, SamplingOptions(steps=1, seed=2), frames=161, **LONG)     # 41 latent frames
    assert any("161 frames is past the 129" in n and "riflex_index=4" in n for n in longer.notes), longer.notes


def test_riflex_off_leaves_the_model_untouched_and_a_cancelled_run_restores_it(model):
    before = model.rope_options
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(m.rope_options))
    e = embeds(model.config, negative=False)
    try:
        sample(model, e, SamplingOptions(steps=1), frames=9, **LONG)
        with pytest.raises(InvalidInputError, match="riflex_index"):
            sample(model, e, SamplingOptions(steps=1, riflex_index=9), frames=9, **LONG)   # before any step
        calls = iter([False, True])
        with pytest.raises(CancelledError):
            sample(model, e, SamplingOptions(steps=3, riflex_index=4), frames=201, **LONG,
                   hooks=SamplingHooks(cancelled=lambda: next(calls)))
    finally:
        handle.remove()
    assert seen == [before, RopeOptions(riflex_index=4)] and model.rope_options is before
