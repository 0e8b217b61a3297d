"""TeaCache and first-block cache: decisions as specified (SPEC 6), per-branch state, skip
counts, reset per run, and threshold 0 bit-identical to no cache."""
from __future__ import annotations

import pytest
import torch

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.sampling import FirstBlockCache, SamplingOptions, TeaCache, installed, sample

from test_sampling_support import SIZE, ForwardRecorder, embeds, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def spec_polynomial(x: float) -> float:
    """SPEC 6, written out independently of the implementation."""
    return 733.226126 * x**4 - 401.131952 * x**3 + 67.5869174 * x**2 - 3.149878 * x + 0.0961237896


def spec_decisions(changes: list[float | None], threshold: float) -> list[tuple[bool, float]]:
    """Replays SPEC 6 on relative-L1 changes (None = first or last step): (skipped, accumulator)."""
    acc, out = 0.0, []
    for r in changes:
        skip = False
        if r is not None:
            acc += spec_polynomial(r)
            skip = acc < threshold
        if not skip:
            acc = 0.0
        out.append((skip, acc))
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _scripted_inputs(levels: list[float]) -> list[torch.Tensor]:
    """m_k = base*(1 + c_k) with base > 0, so mean|m_k - m_k-1| / mean|m_k-1| = |c_k - c_k-1| / (1 + c_k-1)."""
    base = torch.rand(2, 36, 64, generator=torch.Generator().manual_seed(0)) + 0.5
    return [base * (1 + c) for c in levels]


def test_teacache_decisions_follow_the_accumulated_rescaled_relative_l1():
    levels = [0.0, 0.02, 0.03, 0.08, 0.085, 0.09, 0.2, 0.21, 0.215, 0.22, 0.3, 0.31]
    inputs = _scripted_inputs(levels)
    policy = TeaCache(threshold=0.15)
    policy.start_run(len(inputs))
    flags = []
    for step, m in enumerate(inputs):
        policy.begin_step(step, "cond")
        flags.append(policy.observe(m))
    changes = [None] + [abs(b - a) / (1 + a) for a, b in zip(levels, levels[1:])]
    changes[-1] = None                                   # the last step always computes
    expected = spec_decisions(changes, 0.15)
    assert flags == [skip for skip, _ in expected]
    assert any(flags) and not all(flags[1:-1])           # the script exercises both outcomes
    for d, r, (skip, acc) in zip(policy.decisions, changes, expected):
        assert d.skipped == skip
        assert d.accumulated == pytest.approx(acc, abs=1e-6)
        if r is not None:
            assert d.relative_l1 == pytest.approx(r, rel=1e-5)


def test_teacache_keeps_separate_state_per_branch():
    """cond barely changes, uncond changes a lot: cond skips, uncond never; a shared state would
    compare cond with uncond inputs and never skip."""
    cond = _scripted_inputs([0.0, 0.001, 0.002, 0.003, 0.004, 0.005])
    uncond = _scripted_inputs([0.0, 0.5, 1.2, 0.1, 2.0, 0.0])
    policy = TeaCache(threshold=0.5)
    policy.start_run(len(cond))
    for step in range(len(cond)):
        for branch, seq in (("uncond", uncond), ("cond", cond)):
            policy.begin_step(step, branch)
            policy.observe(seq[step])
    by_branch = {b: [d.skipped for d in policy.decisions if d.branch == b] for b in ("cond", "uncond")}
    assert by_branch["cond"] == [False, True, True, True, True, False]
    assert by_branch["uncond"] == [False] * 6


def test_teacache_on_the_tiny_model_measures_block0_modulated_input(model):
    """The recorded relative-L1 values are those of block 0's modulated input between the actual
    forward inputs, and skip/compute follows SPEC 6 on them."""
    policy = TeaCache(threshold=0.08)
    rec = ForwardRecorder(model)
    try:
        result = sample(model, embeds(model.config, negative=False), SamplingOptions(steps=12), cache=policy, **SIZE)
    finally:
        rec.handle.remove()
    with torch.no_grad():
        indicators = [model.double_blocks[0].modulated_image_input(e.img, e.ctx.vec)
                      for e in (model.embed(*call) for call in rec.calls)]
    changes = [None] + [float((b - a).abs().mean() / a.abs().mean()) for a, b in zip(indicators, indicators[1:])]
    changes[-1] = None
    expected = spec_decisions(changes, 0.08)
    assert [d.skipped for d in policy.decisions] == [s for s, _ in expected]
    for d, r in zip(policy.decisions, changes):
        assert (d.relative_l1 is None) == (r is None)
        if r is not None:
            assert d.relative_l1 == pytest.approx(r, rel=1e-4)
    report = result.cache
    assert report.skipped == sum(s for s, _ in expected) > 0
    assert report.computed + report.skipped == result.forwards == 12


def test_skipped_step_adds_the_cached_residual_to_the_embedding(model):
    e = embeds(model.config, negative=False)
    with torch.no_grad():
        x = torch.randn(1, 16, 3, 6, 8)
        emb = model.embed(x, 900.0, e.positive.text_states, e.positive.text_mask, e.positive.pooled, 6000.0)
        full, _ = model.run_blocks(emb.img, emb.txt, emb.ctx)
        policy = TeaCache(threshold=1e9)
        policy.start_run(3)
        for step in range(2):
            policy.begin_step(step, "cond")
            out = policy.run(model, emb)
    assert policy.report().skipped == 1
    assert torch.equal(out, emb.img + (full - emb.img))


@pytest.mark.parametrize("make", [lambda: TeaCache(threshold=1e9), lambda: FirstBlockCache(threshold=1e9)])
def test_only_first_and_last_step_compute_at_a_huge_threshold(model, make):
    policy = make()
    result = sample(model, embeds(model.config, negative=False), SamplingOptions(steps=6), cache=policy, **SIZE)
    assert (result.cache.computed, result.cache.skipped) == (2, 4)
    assert str(result.cache).startswith(policy.name)


def test_start_and_end_step_limit_where_skipping_happens(model):
    policy = TeaCache(threshold=1e9, start_step=2, end_step=5)
    sample(model, embeds(model.config, negative=False), SamplingOptions(steps=8), cache=policy, **SIZE)
    assert [d.step for d in policy.decisions if d.skipped] == [2, 3, 4]


@pytest.mark.parametrize("make", [lambda: TeaCache(threshold=0.0), lambda: FirstBlockCache(threshold=0.0)])
@pytest.mark.parametrize("cfg_mode", ["batched", "sequential"])
def test_threshold_zero_is_bit_identical_to_no_cache(model, make, cfg_mode):
    opts = SamplingOptions(steps=5, cfg_scale=2.5, cfg_mode=cfg_mode, seed=1)
    plain = sample(model, embeds(model.config), opts, **SIZE)
    cached = sample(model, embeds(model.config), opts, cache=make(), **SIZE)
    assert torch.equal(plain.latent, cached.latent)
    assert cached.cache.skipped == 0


def test_true_cfg_sequential_reports_both_branches_and_batched_one(model):
    for mode, branches in (("sequential", {"cond", "uncond"}), ("batched", {"cond+uncond"})):
        policy = TeaCache(threshold=0.2)
        result = sample(model, embeds(model.config), SamplingOptions(steps=8, cfg_scale=3.0, cfg_mode=mode),
                        cache=policy, **SIZE)
        assert set(result.cache.per_branch) == branches
        assert all(c + s == 8 for c, s in result.cache.per_branch.values())


def test_state_resets_at_the_start_of_every_run(model):
    policy = TeaCache(threshold=0.1)
    run = lambda seed: sample(model, embeds(model.config, negative=False), SamplingOptions(steps=8, seed=seed),
                              cache=policy, **SIZE)
    first = run(0)
    run(5)
    again = run(0)
    assert torch.equal(first.latent, again.latent)
    assert first.cache == again.cache


def test_offload_storage_keeps_cached_tensors_on_the_cpu_and_changes_nothing(model):
    main, offload = TeaCache(threshold=0.1), TeaCache(threshold=0.1, storage="offload")
    results = []
    for policy in (main, offload):
        results.append(sample(model, embeds(model.config, negative=False), SamplingOptions(steps=8), cache=policy,
                              **SIZE))
    assert torch.equal(results[0].latent, results[1].latent)
    e = embeds(model.config, negative=False)
    with torch.no_grad(), installed(model, offload):
        offload.start_run(3)
        model(torch.randn(1, 16, 3, 6, 8), 500.0, e.positive.text_states, e.positive.text_mask, e.positive.pooled, 6000.0)
    assert model.cache is None
    state = offload.states["cond"]
    assert state.residual.device.type == "cpu" and state.previous_input.device.type == "cpu"


def test_first_block_cache_reuses_the_rest_residual_when_block0_barely_changes(model):
    e = embeds(model.config, negative=False)
    with torch.no_grad():
        x = torch.randn(1, 16, 3, 6, 8)
        emb = model.embed(x, 900.0, e.positive.text_states, e.positive.text_mask, e.positive.pooled, 6000.0)
        img1, txt1 = model.run_blocks(emb.img, emb.txt, emb.ctx, 0, 1)
        full, _ = model.run_blocks(emb.img, emb.txt, emb.ctx)
        policy = FirstBlockCache(threshold=0.01)
        policy.start_run(4)
        outs = []
        for step in range(3):
            policy.begin_step(step, "cond")
            outs.append(policy.run(model, emb))
    assert torch.equal(outs[0], full)                      # computed: every block
    assert [c[3] for c in policy.changes] == [False, True, True]
    assert policy.changes[1][2] == 0.0                     # same input: no change in block 0's residual
    assert torch.equal(outs[1], img1 + (full - img1))


def test_bad_cache_arguments():
    with pytest.raises(InvalidInputError, match="threshold"):
        TeaCache(threshold=-0.1)
    with pytest.raises(InvalidInputError, match="start_step"):
        FirstBlockCache(threshold=0.1, start_step=5, end_step=3)
