"""The one sampling loop on the golden tiny DiT: modes, guidance, hooks, cancellation, bad input."""
from __future__ import annotations

import pytest
import torch

from hyvideo_core.errors import CancelledError, InvalidInputError
from hyvideo_core.sampling import (DEFAULT_NEGATIVE_PROMPT, LATENT_SCALE, PromptPair, SamplingHooks,
                                   SamplingOptions, TeaCache, flow_sigmas, sample, seeded_noise)

from test_sampling_support import SIZE, ForwardRecorder, embeds, prompt, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_default_negative_prompt_is_the_official_one():
    assert DEFAULT_NEGATIVE_PROMPT.startswith("Aerial view, aerial view, overexposed")
    assert DEFAULT_NEGATIVE_PROMPT.endswith("bad limbs, distortion")


def test_one_euler_step_output_is_a_raw_latent(model):
    """x1 = noise + v*(0 - 1) in model space; the LATENT is that divided by 0.476986."""
    e = embeds(model.config, negative=False)
    result = sample(model, e, SamplingOptions(steps=1, seed=3, embedded_guidance=4.5), **SIZE)
    noise = seeded_noise(result.plan.shape, 3)
    p = e.positive
    with torch.no_grad():
        v = model(noise, 1000.0, p.text_states, p.text_mask, p.pooled, 4500.0)
    torch.testing.assert_close(result.latent, (noise - v) / LATENT_SCALE, atol=1e-6, rtol=1e-6)
    assert result.latent.shape == (1, 16, 3, 6, 8)


def test_same_seed_same_latent_other_seed_differs(model):
    e = embeds(model.config, negative=False)
    run = lambda seed: sample(model, e, SamplingOptions(steps=3, seed=seed), **SIZE).latent
    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1


def test_embedded_guidance_is_one_forward_per_step_at_scale_x1000(model):
    rec = ForwardRecorder(model)
    try:
        result = sample(model, embeds(model.config, negative=False),
                        SamplingOptions(steps=4, embedded_guidance=6.0), **SIZE)
    finally:
        rec.handle.remove()
    assert len(rec) == 4 == result.forwards
    assert [call[5] for call in rec.calls] == [6000.0] * 4
    timesteps = [call[1] for call in rec.calls]
    assert timesteps == pytest.approx([float(s) * 1000 for s in flow_sigmas(4, 7.0)[:-1]])
    assert all(call[0].shape[0] == 1 for call in rec.calls)


def test_true_cfg_batched_equals_sequential(model):
    e = embeds(model.config)  # negative has 7 tokens, positive 12 (9 valid): batching pads
    opts = dict(steps=3, seed=2, cfg_scale=4.0)
    rec = ForwardRecorder(model)
    try:
        batched = sample(model, e, SamplingOptions(**opts, cfg_mode="batched"), **SIZE)
        n_batched = len(rec)
        sequential = sample(model, e, SamplingOptions(**opts, cfg_mode="sequential"), **SIZE)
    finally:
        rec.handle.remove()
    assert n_batched == 3 and len(rec) - n_batched == 6
    assert rec.calls[0][0].shape[0] == 2                      # [neg, pos] in one forward
    torch.testing.assert_close(batched.latent, sequential.latent, atol=2e-5, rtol=1e-5)
    no_cfg = sample(model, e, SamplingOptions(steps=3, seed=2), **SIZE)
    assert (no_cfg.latent - batched.latent).abs().max() > 1e-2


def test_true_cfg_combines_negative_first(model):
    """One step with the batched path equals v_u + s*(v_c - v_u) from separate forwards."""
    e = embeds(model.config)
    result = sample(model, e, SamplingOptions(steps=1, seed=4, cfg_scale=3.0), **SIZE)
    x = seeded_noise(result.plan.shape, 4)
    with torch.no_grad():
        v_u = model(x, 1000.0, e.negative.text_states, e.negative.text_mask, e.negative.pooled, 6000.0)
        v_c = model(x, 1000.0, e.positive.text_states, e.positive.text_mask, e.positive.pooled, 6000.0)
    expected = (x - (v_u + 3.0 * (v_c - v_u))) / LATENT_SCALE
    torch.testing.assert_close(result.latent, expected, atol=2e-5, rtol=1e-5)


def test_video_to_video_noises_the_input_to_the_start_sigma(model):
    raw = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(9))
    rec = ForwardRecorder(model)
    try:
        result = sample(model, embeds(model.config, negative=False),
                        SamplingOptions(steps=10, denoise=0.4, seed=5), init_latent=raw)
    finally:
        rec.handle.remove()
    sigma = float(flow_sigmas(10, 7.0)[6])
    expected = (1 - sigma) * raw * LATENT_SCALE + sigma * seeded_noise(raw.shape, 5)
    assert result.forwards == 4 and result.schedule.start == 6
    torch.testing.assert_close(rec.calls[0][0], expected, atol=1e-6, rtol=1e-6)
    assert rec.calls[0][1] == pytest.approx(sigma * 1000)


def test_keyframe_model_gets_the_conditioning_concatenated_every_step():
    model = tiny_model(in_channels=32)
    cond_raw = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(1))
    rec = ForwardRecorder(model)
    try:
        result = sample(model, embeds(model.config), SamplingOptions(steps=3, cfg_scale=2.0),
                        keyframe_latent=cond_raw, **SIZE)
    finally:
        rec.handle.remove()
    assert result.latent.shape == (1, 16, 3, 6, 8)
    for call in rec.calls:
        x = call[0]
        assert x.shape == (2, 32, 3, 6, 8)
        torch.testing.assert_close(x[:, 16:], (cond_raw * LATENT_SCALE).expand(2, -1, -1, -1, -1))
    other = sample(model, embeds(model.config), SamplingOptions(steps=3, cfg_scale=2.0),
                   keyframe_latent=cond_raw * 0, **SIZE)
    assert (other.latent - result.latent).abs().max() > 1e-3


def test_hooks_progress_and_preview_every_step(model):
    seen, previews = [], []
    hooks = SamplingHooks(progress=lambda k, n: seen.append((k, n)),
                          preview=lambda k, n, rgb: previews.append((k, rgb)))
    sample(model, embeds(model.config, negative=False), SamplingOptions(steps=3), hooks=hooks, **SIZE)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [k for k, _ in previews] == [1, 2, 3]
    rgb = previews[-1][1]
    assert rgb.shape == (1, 3, 6, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1


@pytest.mark.parametrize("cancel_after", [0, 2])
def test_cancellation_stops_before_the_next_step_and_releases_buffers(model, cancel_after):
    done = []
    policy = TeaCache(threshold=0.1)
    hooks = SamplingHooks(progress=lambda k, n: done.append(k), cancelled=lambda: len(done) > cancel_after)
    rec = ForwardRecorder(model)
    try:
        with pytest.raises(CancelledError, match=f"step {cancel_after + 2} of 6"):
            sample(model, embeds(model.config, negative=False), SamplingOptions(steps=6), cache=policy,
                   hooks=hooks, **SIZE)
    finally:
        rec.handle.remove()
    assert len(rec) == cancel_after + 1            # step k ran, step k+1 never did
    assert model.cache is None                     # the policy was uninstalled
    assert policy.states == {}                     # and its cached tensors dropped


def _bad(model, **kw):
    args = {"embeds": embeds(model.config), "options": SamplingOptions(steps=2), **SIZE}
    args.update(kw)
    return args


@pytest.mark.parametrize("case, word", [
    ("steps0", "steps"), ("denoise0", "denoise"), ("denoise_big", "denoise"), ("frames0", "frames"),
    ("v2v_channels", "latent"), ("v2v_odd", "even"), ("v2v_and_size", "init_latent"), ("v2v_batch", "init_latent"),
    ("text_dim", "states"), ("pooled_dim", "pooled"), ("mask_shape", "mask"), ("batch", "batch"),
    ("cfg_no_negative", "negative"), ("cfg_mode", "cfg_mode"), ("cfg_below_one", "cfg_scale"),
    ("keyframe_on_t2v", "keyframe"), ("no_size", "width"), ("solver", "solver"),
])
def test_bad_input_is_rejected_before_any_compute(model, case, word):
    c = model.config
    good = embeds(c)
    cases = {
        "steps0": dict(options=SamplingOptions(steps=0)),
        "denoise0": dict(options=SamplingOptions(denoise=0.0)),
        "denoise_big": dict(options=SamplingOptions(denoise=1.5)),
        "frames0": dict(frames=0),
        "v2v_channels": dict(width=None, height=None, frames=None, init_latent=torch.zeros(1, 15, 3, 6, 8)),
        "v2v_odd": dict(width=None, height=None, frames=None, init_latent=torch.zeros(1, 16, 3, 5, 8)),
        "v2v_and_size": dict(width=128, init_latent=torch.zeros(1, 16, 3, 6, 8)),
        "v2v_batch": dict(width=None, height=None, frames=None, batch_size=3,
                          init_latent=torch.zeros(2, 16, 3, 6, 8)),
        "text_dim": dict(embeds=PromptPair(prompt(c.replace(text_dim=32), 5, 0))),
        "pooled_dim": dict(embeds=PromptPair(prompt(c.replace(pooled_text_dim=768), 5, 0))),
        "mask_shape": dict(embeds=PromptPair(type(good.positive)(good.positive.text_states, torch.ones(1, 3),
                                                                 good.positive.pooled))),
        "batch": dict(embeds=PromptPair(prompt(c, 5, 0, batch=3)), batch_size=2),
        "cfg_no_negative": dict(embeds=embeds(c, negative=False), options=SamplingOptions(cfg_scale=5.0)),
        "cfg_mode": dict(options=SamplingOptions(cfg_scale=5.0, cfg_mode="parallel")),
        "cfg_below_one": dict(options=SamplingOptions(cfg_scale=0.5)),
        "keyframe_on_t2v": dict(keyframe_latent=torch.zeros(1, 16, 3, 6, 8)),
        "no_size": dict(width=None),
        "solver": dict(options=SamplingOptions(solver="lms")),
    }
    rec = ForwardRecorder(model)
    try:
        with pytest.raises(InvalidInputError, match=word):
            sample(model, **_bad(model, **cases[case]))
    finally:
        rec.handle.remove()
    assert len(rec) == 0


def test_keyframe_model_without_keyframes_is_rejected():
    model = tiny_model(in_channels=32)
    with pytest.raises(InvalidInputError, match="keyframe_latent"):
        sample(model, embeds(model.config), SamplingOptions(steps=1), **SIZE)
    with pytest.raises(InvalidInputError, match="keyframe_latent"):
        sample(model, embeds(model.config), SamplingOptions(steps=1), keyframe_latent=torch.zeros(1, 16, 2, 6, 8),
               **SIZE)


def test_accepts_the_text_encoders_embeds_object(model):
    """hyvideo_core.text.embeds.TextEmbeds has the attributes the loop reads (duck typed)."""
    text_embeds = pytest.importorskip("hyvideo_core.text.embeds")
    ours = embeds(model.config)
    theirs = text_embeds.TextEmbeds(
        positive=text_embeds.PromptEmbeds(ours.positive.text_states, ours.positive.text_mask, ours.positive.pooled),
        negative=text_embeds.PromptEmbeds(ours.negative.text_states, ours.negative.text_mask, ours.negative.pooled))
    opts = SamplingOptions(steps=2, cfg_scale=2.0)
    assert torch.equal(sample(model, theirs, opts, **SIZE).latent, sample(model, ours, opts, **SIZE).latent)


def test_unused_inputs_and_snapping_are_reported(model, caplog):
    result = sample(model, embeds(model.config), SamplingOptions(steps=1), width=60, height=48, frames=10)
    assert result.plan.shape == (1, 16, 3, 6, 8)
    joined = " ".join(result.notes)
    assert "60x48" in joined and "frames 10" in joined and "negative embeds are not used" in joined
    assert len(caplog.records) >= 3
    v2v = sample(model, embeds(model.config, negative=False), SamplingOptions(steps=1),
                 init_latent=torch.zeros(1, 16, 3, 6, 8))
    assert any("fully replaced by noise" in n for n in v2v.notes)


def test_nan_velocity_stops_at_that_step_with_a_clear_error(model):
    from hyvideo_core.errors import NumericsError
    calls = []

    def poison(_module, _args, output):
        calls.append(1)
        return output * float("nan") if len(calls) == 2 else output

    hook = model.final_layer.register_forward_hook(poison)
    try:
        with pytest.raises(NumericsError, match="step 2 of 4.*bf16"):
            sample(model, embeds(model.config, negative=False), SamplingOptions(steps=4), **SIZE)
    finally:
        hook.remove()
    assert len(calls) == 3   # two steps, then one diagnostic re-run of step 2 (sampling/numerics.py)
