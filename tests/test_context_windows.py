"""Context windows (sampling/context_windows.py): ComfyUI's index rules, fuse weights, FreeNoise, the
windowed velocity inside the one loop (against a hand-made loop), per-window cache state, keyframes,
the no-op case, bad input, the planner's window size and the node in a harness graph."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.sampling import (LATENT_SCALE, ContextWindows, SamplingOptions, TeaCache, flow_sigmas, sample,
                                   seeded_noise)
from hyvideo_core.sampling.context_windows import fuse_weights, freenoise_shuffle, ordered_halving

from test_sampling_support import ForwardRecorder, embeds, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = {"width": 32, "height": 32, "frames": 41}      # latent [1, 16, 11, 4, 4]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# -- an independent statement of ComfyUI's index rules (comfy/context_windows.py) ------------------
def ref_halving(step: int) -> float:
    return int(format(step, "064b")[::-1], 2) / 2 ** 64


def ref_raw_uniform(T, L, O, stride, step):
    out = []
    levels = min(stride, int(np.ceil(np.log2(T / L))) + 1)
    for s in (2 ** np.arange(levels)).tolist():
        pad = int(round(T * ref_halving(step)))
        first = int(ref_halving(step) * s) + pad
        for j in range(first, T + pad - O, L * s - O):
            out.append([e % T for e in range(j, j + L * s, s)])
    return out


def ref_windows(schedule, T, L, O, stride=1, step=0):
    if T <= L:
        return [list(range(T))]
    if schedule == "static":
        out, s = [], 0
        while True:
            if s + L >= T:
                out.append(list(range(T - L, T)))
                return out
            out.append(list(range(s, s + L)))
            s += L - O
    out = ref_raw_uniform(T, L, O, stride, step)
    if schedule == "looped":
        return out
    keep, k = [], 0
    while k < len(out):
        w = out[k]
        rolls = [i for i in range(1, len(w)) if w[i] < w[i - 1]]
        if rolls:
            at = w[rolls[0]]
            base = [(v - w[0] + T) % T for v in w]
            w[:] = [v + (T - base[-1] - 1) for v in base]
            if at not in out[(k + 1) % len(out)]:
                out.insert(k + 1, list(range(at, at + L)))
        keep.append(all(w != out[p] for p in range(k)))
        k += 1
    return [w for w, kept in zip(out, keep) if kept]


def covers(windows, T) -> bool:
    return {f for w in windows for f in w} == set(range(T))


def pixel(latent: int) -> int:
    return (latent - 1) * 4 + 1


def test_ordered_halving_is_the_bit_reversed_step():
    assert [ordered_halving(k) for k in range(6)] == [0.0, 0.5, 0.25, 0.75, 0.125, 0.625]
    assert all(ordered_halving(k) == ref_halving(k) for k in range(300))


CASES = [(T, L, O, stride) for T, L, O, stride in (
    (65, 33, 8, 1), (129, 33, 8, 1), (129, 33, 8, 2), (129, 33, 8, 3), (11, 5, 1, 1), (11, 5, 2, 2), (40, 9, 0, 1),
    (23, 7, 3, 1), (33, 33, 8, 1), (20, 33, 8, 1), (97, 17, 4, 4), (50, 13, 12, 1), (66, 33, 1, 2))]


@pytest.mark.parametrize("schedule", ["static", "uniform", "looped"])
@pytest.mark.parametrize("T, L, O, stride", CASES)
def test_schedules_follow_comfyuis_index_rules(schedule, T, L, O, stride):
    cw = ContextWindows(pixel(L), pixel(O) if O else 0, schedule, stride)
    assert (cw.latent_length, cw.latent_overlap) == (L, O)
    for step in range(9):
        expected = ref_windows(schedule, T, L, O, stride, step)
        if covers(expected, T):
            assert cw.indices(T, step) == expected, (schedule, step)
        else:   # ComfyUI would index out of range or leave frames out: refused by name
            with pytest.raises(InvalidInputError, match="context_stride 1"):
                cw.indices(T, step)


def test_uniform_windows_move_every_step_static_ones_do_not():
    uniform, static = ContextWindows(129, 32, "uniform"), ContextWindows(129, 32, "static")
    assert static.indices(65, 0) == static.indices(65, 3) == [list(range(0, 33)), list(range(25, 58)),
                                                              list(range(32, 65))]
    assert uniform.indices(65, 0) != uniform.indices(65, 1)
    looped = ContextWindows(129, 32, "looped").indices(65, 1)
    assert any(w[0] > w[-1] for w in looped)                    # a looped window wraps to the start
    assert all(w[0] < w[-1] for w in uniform.indices(65, 1))    # uniform ones are moved to the end instead


def test_fuse_weights():
    assert fuse_weights(4) == [1, 2, 2, 1] and fuse_weights(5) == [1, 2, 3, 2, 1] and fuse_weights(1) == [1]
    assert fuse_weights(6, "flat") == [1.0] * 6
    assert ContextWindows(fuse="flat").weights(3) == [1.0, 1.0, 1.0]


def test_pixel_frames_become_latent_frames_and_the_plan_is_one_window():
    cw = ContextWindows(129, 32)
    assert (cw.latent_length, cw.latent_overlap) == (33, 8)
    assert (ContextWindows(17, 0).latent_overlap, ContextWindows(17, 4).latent_overlap) == (0, 1)
    assert cw.planned_frames(257) == 129 and cw.planned_frames(65) == 65
    from hyvideo_core.run.stages import run_shape
    shape = run_shape(SamplingOptions(context=cw), (960, 544, 257), None)
    assert (shape.width, shape.height, shape.frames) == (960, 544, 129)
    assert run_shape(SamplingOptions(), (960, 544, 257), None).frames == 257


# -- the windowed loop against a hand-made one -------------------------------------------------------
def reference_run(model, e, steps, seed, cw: ContextWindows, shape, concat=None):
    """Euler over flow sigmas, per step: one forward per window on x[:, :, idx], pyramid/flat blend."""
    p = e.positive
    x = seeded_noise(shape, seed)
    sigmas = flow_sigmas(steps, 7.0)
    T = shape[2]
    for k in range(steps):
        t = float(sigmas[k]) * 1000.0
        total, count = torch.zeros_like(x), torch.zeros(T)
        for idx in ref_windows(cw.schedule, T, cw.latent_length, cw.latent_overlap, cw.stride, k):
            xi = x[:, :, idx]
            if concat is not None:
                xi = torch.cat([xi, concat[:, :, idx]], dim=1)
            with torch.no_grad():
                v = model(xi, t, p.text_states, p.text_mask, p.pooled, 6000.0)
            w = torch.tensor(fuse_weights(len(idx), cw.fuse))
            for pos, f in enumerate(idx):
                total[:, :, f] += v[:, :, pos] * w[pos]
                count[f] += w[pos]
        v = total / count.view(1, 1, -1, 1, 1)
        x = x + (float(sigmas[k + 1]) - float(sigmas[k])) * v
    return x / LATENT_SCALE


@pytest.mark.parametrize("schedule, fuse", [("uniform", "pyramid"), ("static", "flat"), ("looped", "pyramid")])
def test_windowed_sampling_equals_a_hand_made_loop(model, schedule, fuse):
    e = embeds(model.config, negative=False)
    cw = ContextWindows(17, 4, schedule, freenoise=False, fuse=fuse)   # 5 latent frames, overlap 1, over 11
    rec = ForwardRecorder(model)
    try:
        result = sample(model, e, SamplingOptions(steps=3, seed=5, context=cw), **SIZE)
    finally:
        rec.handle.remove()
    assert all(call[0].shape[2] == 5 for call in rec.calls)          # the DiT only ever sees one window
    expected = reference_run(model, e, 3, 5, cw, result.plan.shape)
    assert result.forwards == len(rec) > 3
    torch.testing.assert_close(result.latent, expected, atol=1e-5, rtol=1e-5)


def test_a_video_that_fits_one_window_is_bit_identical_to_no_windows(model):
    e = embeds(model.config)
    opts = dict(steps=3, seed=2, cfg_scale=2.0)
    plain = sample(model, e, SamplingOptions(**opts), **SIZE, cache=TeaCache(0.2))
    for cw in (ContextWindows(41, 8), ContextWindows(129, 32, "uniform", fuse="flat")):
        windowed = sample(model, e, SamplingOptions(**opts, context=cw), **SIZE, cache=TeaCache(0.2))
        assert torch.equal(windowed.latent, plain.latent) and windowed.forwards == plain.forwards
        assert windowed.cache.per_branch == plain.cache.per_branch
    assert "not used" in ContextWindows(41, 8).describe(11)


def test_each_window_keeps_its_own_cache_state(model):
    e = embeds(model.config)
    cw = ContextWindows(17, 4, "static", freenoise=True)
    opts = SamplingOptions(steps=4, seed=3, cfg_scale=2.0, context=cw)
    no_cache = sample(model, e, opts, **SIZE)
    zero = sample(model, e, opts, **SIZE, cache=TeaCache(0.0))
    assert torch.equal(zero.latent, no_cache.latent)
    windows = len(cw.indices(11, 0))
    assert set(zero.cache.per_branch) == {f"cond+uncond@w{j}" for j in range(windows)}
    # A threshold that skips every middle step: each window reuses its own residual (the first and last
    # steps compute), so the counts are per window and the result stays close to the computed run.
    policy = TeaCache(1e9)
    skipping = sample(model, e, opts, **SIZE, cache=policy)
    assert skipping.cache.per_branch == {f"cond+uncond@w{j}": (2, 2) for j in range(windows)}
    assert {d.branch for d in policy.decisions} == set(zero.cache.per_branch)
    relative = float((skipping.latent - no_cache.latent).norm() / no_cache.latent.norm())
    assert 0 < relative < 0.5


def test_windows_slice_the_keyframe_conditioning_with_x():
    model = tiny_model(in_channels=32)
    e = embeds(model.config, negative=False)
    cond_raw = torch.randn(1, 16, 11, 4, 4, generator=torch.Generator().manual_seed(1))
    cw = ContextWindows(17, 4, "uniform", freenoise=False)
    rec = ForwardRecorder(model)
    try:
        result = sample(model, e, SamplingOptions(steps=2, seed=1, context=cw), keyframe_latent=cond_raw, **SIZE)
    finally:
        rec.handle.remove()
    windows = [idx for k in range(2) for idx in cw.indices(11, k)]
    assert len(rec.calls) == len(windows)
    for call, idx in zip(rec.calls, windows):
        torch.testing.assert_close(call[0][:, 16:], cond_raw[:, :, idx] * LATENT_SCALE)
    expected = reference_run(model, e, 2, 1, cw, result.plan.shape, concat=cond_raw * LATENT_SCALE)
    torch.testing.assert_close(result.latent, expected, atol=1e-5, rtol=1e-5)


# -- FreeNoise ----------------------------------------------------------------------------------
def test_freenoise_is_seeded_and_made_of_shuffled_repeats_of_the_first_window():
    base = seeded_noise((2, 16, 23, 4, 4), 9)
    L, O = 5, 1
    a, b = freenoise_shuffle(base, L, O, 9), freenoise_shuffle(base, L, O, 9)
    assert torch.equal(a, b) and not torch.equal(a, freenoise_shuffle(base, L, O, 10))
    assert torch.equal(a[:, :, :L], base[:, :, :L])
    hop = L - O
    for start in range(0, 23 - L, hop):
        place, count = start + L, min(hop, 23 - start - L)
        sources = []
        for f in range(place, place + count):
            match = [s for s in range(start, start + count) if torch.equal(a[:, :, f], a[:, :, s])]
            assert len(match) == 1
            sources += match
        assert sorted(sources) == list(range(start, start + count))   # a permutation of that chunk
    for f in range(23):   # every frame repeats one of the first window's noise frames
        assert any(torch.equal(a[:, :, f], base[:, :, s]) for s in range(L))
    # The same rule written out (KJ's loop): noise[place:place+n] = noise[start + randperm(n)], in order.
    g = torch.Generator().manual_seed(9)
    ref = base.clone()
    for start in range(0, 23 - L, hop):
        n = min(hop, 23 - start - L)
        ref[:, :, start + L:start + L + n] = ref[:, :, (start + torch.randperm(n, generator=g)).tolist()]
    assert torch.equal(a, ref)


def test_freenoise_in_the_loop_shuffles_only_when_windows_are_used(model):
    e = embeds(model.config, negative=False)
    on = ContextWindows(17, 4, "static", freenoise=True)
    off = ContextWindows(17, 4, "static", freenoise=False)
    r_on = sample(model, e, SamplingOptions(steps=1, seed=4, context=on), **SIZE)
    r_on_again = sample(model, e, SamplingOptions(steps=1, seed=4, context=on), **SIZE)
    r_off = sample(model, e, SamplingOptions(steps=1, seed=4, context=off), **SIZE)
    assert torch.equal(r_on.latent, r_on_again.latent) and not torch.equal(r_on.latent, r_off.latent)
    noise = seeded_noise(r_on.plan.shape, 4)
    assert torch.equal(on.shuffle_noise(noise, 4), freenoise_shuffle(noise, 5, 1, 4))
    assert off.shuffle_noise(noise, 4) is noise
    assert torch.equal(ContextWindows(41, 8).shuffle_noise(noise, 4), noise)   # fits one window


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, word", [
    (dict(length=33, overlap=33), "overlap"),
    (dict(length=33, overlap=40), "overlap"),
    (dict(length=2, overlap=1), "overlap"),          # both 1 latent frame
    (dict(length=0), "length"),
    (dict(length=-5, overlap=0), "length"),
    (dict(length=33.0), "length"),
    (dict(overlap=-4), "overlap"),
    (dict(stride=0), "stride"),
    (dict(schedule="batched"), "schedule"),
    (dict(fuse="relative"), "fuse"),
    (dict(freenoise="yes"), "freenoise"),
])
def test_bad_settings_are_refused_naming_the_parameter(model, changes, word):
    bad = ContextWindows(**{**dict(length=33, overlap=8), **changes})
    with pytest.raises(InvalidInputError, match=word):
        bad.check()
    rec = ForwardRecorder(model)
    try:
        with pytest.raises(InvalidInputError, match=word):
            sample(model, embeds(model.config, negative=False), SamplingOptions(steps=2, context=bad), **SIZE)
    finally:
        rec.handle.remove()
    assert len(rec) == 0   # before the first step


def test_a_schedule_that_cannot_cover_the_video_is_refused_before_the_first_step(model):
    T, L, O, stride = 11, 5, 2, 2
    bad_step = next(k for k in range(50) if not covers(ref_windows("uniform", T, L, O, stride, k), T))
    cw = ContextWindows(pixel(L), pixel(O), "uniform", stride)
    rec = ForwardRecorder(model)
    try:
        with pytest.raises(InvalidInputError, match="context_stride 1"):
            sample(model, embeds(model.config, negative=False),
                   SamplingOptions(steps=bad_step + 1, context=cw), **SIZE)
    finally:
        rec.handle.remove()
    assert len(rec) == 0
    with pytest.raises(InvalidInputError, match="context: expected ContextWindows"):
        sample(model, embeds(model.config, negative=False), SamplingOptions(steps=1, context=(17, 4)), **SIZE)


def test_the_cli_takes_context_windows():
    from hyvideo_core.cli import _parser, _settings
    args = _parser().parse_args(["generate", "--frames", "257", "--context-frames", "129", "--context-overlap",
                                 "32", "--context-schedule", "uniform", "--no-freenoise"])
    assert _settings(args).sampling.context == ContextWindows(129, 32, "uniform", 1, False, "pyramid")
    assert _settings(_parser().parse_args(["generate"])).sampling.context is None
    with pytest.raises(InvalidInputError, match="overlap"):
        _settings(_parser().parse_args(["generate", "--context-frames", "33", "--context-overlap", "33"]))


# -- the node in a harness graph --------------------------------------------------------------------
@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    from node_graphs import tiny_runner
    return tiny_runner(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("tiny_models"))[0]


def context_prompt(**context):
    from node_graphs import SAMPLER, node, t2v_prompt
    prompt = t2v_prompt(frames=17)   # 5 latent frames
    prompt["40"] = node("HyVideoContextWindows", **{"context_frames": 9, "context_overlap": 4, "schedule": "static",
                                                    "context_stride": 1, "freenoise": True, "fuse": "pyramid",
                                                    **context})
    prompt[SAMPLER]["inputs"]["context"] = ["40", 0]
    return prompt


def test_the_context_node_drives_the_sampler(runner):
    from harness.contract import node_problems
    from node_graphs import SAMPLER, sampled, t2v_prompt, ui_text
    from harness import load_pack
    pack = load_pack()
    assert node_problems("HyVideoContextWindows", pack.NODE_CLASS_MAPPINGS["HyVideoContextWindows"]) == []
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["HyVideoContextWindows"] == "HunyuanVideo Context Windows"
    plain = sampled(runner.run(t2v_prompt(frames=17)).expect_success())
    windowed = runner.run(context_prompt()).expect_success()
    assert "context windows: 2 static windows of 3 latent frames" in ui_text(windowed, SAMPLER)
    assert not torch.equal(sampled(windowed), plain)
    whole = runner.run(context_prompt(context_frames=17)).expect_success()
    assert torch.equal(sampled(whole), plain) and "not used" in ui_text(whole, SAMPLER)
    failed = runner.run(context_prompt(context_overlap=12))
    assert failed.status == "error" and failed.error["node_id"] == "40"
    assert "overlap" in failed.error["exception_message"]
