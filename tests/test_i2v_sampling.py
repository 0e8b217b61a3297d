"""Image-to-video in the one sampling loop (SPEC_NEXT 2.3-2.5): token_replace, latent_concat and
SkyReels runs against diffusers' pipelines' per-step math on the same tiny random weights, the
stability / dynamic start, the refusals, and T2V untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hyvideo_core.run import encode_first_frame
from hyvideo_core.conditioning import (I2V_TEXT_TOKENS, ImageConditioning, fit_first_frame,
                                       recommended_shift, text_interleave)
from hyvideo_core.errors import CancelledError, InvalidInputError
from hyvideo_core.model import ImageCondition
from hyvideo_core.model.config import PRESETS
from hyvideo_core.sampling import (LATENT_SCALE, ContextWindows, PromptPair, PromptTensors, SamplingHooks,
                                   SamplingOptions, plan_schedule, sample, seeded_noise)

from test_dit_i2v import diffusers_model, random_model

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = PRESETS["tiny"]
W, H, F = 48, 32, 9                   # latent [1, 16, 3, 4, 6]
LATENT = (1, 16, 3, H // 8, W // 8)
MODES = {"token_replace": (16, True), "latent_concat": (33, False), "skyreels": (32, True)}


def prompt_pair(config, seed=3, length=7, valid=5):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :valid] = 1
    return PromptPair(PromptTensors(torch.randn(1, length, config.text_dim, generator=g), mask,
                                    torch.randn(1, config.pooled_text_dim, generator=g)))


def image_latent(seed=21, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 1, H // 8, W // 8, generator=g) * scale


@pytest.fixture(scope="module")
def models():
    return {mode: random_model(TINY.replace(in_channels=ch, guidance_embed=guided)) for mode, (ch, guided) in
            MODES.items()}


def run(model, image=None, steps=2, seed=4, shift=7.0, solver="euler", **kw):
    options = SamplingOptions(steps=steps, shift=shift, seed=seed, solver=solver, embedded_guidance=6.0)
    return sample(model, prompt_pair(model.config), options, width=W, height=H, frames=F, image=image, **kw)


def reference_run(model, mode, raw_image, steps, shift, seed, stability):
    """The diffusers I2V pipelines' denoising loop (HunyuanVideoImageToVideoPipeline for token_replace /
    latent_concat, HunyuanSkyreelsImageToVideoPipeline for SkyReels) on diffusers' transformer with the
    same weights, the same noise and sigmas: frame-0 replace, model call, scheduler step (frames 1..
    only for token_replace), re-attach."""
    ref = diffusers_model(model, {"token_replace": "token_replace", "latent_concat": "latent_concat"}.get(mode))
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
    prompt = prompt_pair(model.config).positive
    image = raw_image * LATENT_SCALE
    t = LATENT[2]
    latents = seeded_noise(LATENT, seed)
    if stability:
        latents = latents * 0.999 + image.repeat(1, 1, t, 1, 1) * 0.001
    padded = torch.cat([image, torch.zeros(1, 16, t - 1, *LATENT[3:])], dim=2)
    mask = torch.zeros(1, 1, *LATENT[2:])
    mask[:, :, 0] = 1
    guidance = torch.tensor([6000.0]) if model.config.guidance_embed else None
    with torch.no_grad():
        for step in scheduler.timesteps:
            if mode == "token_replace":
                x_in = torch.cat([image, latents[:, :, 1:]], dim=2)
            elif mode == "latent_concat":
                x_in = torch.cat([latents, padded, mask], dim=1)
            else:
                x_in = torch.cat([latents, padded], dim=1)
            v = ref(hidden_states=x_in, timestep=step.expand(1), encoder_hidden_states=prompt.text_states,
                    encoder_attention_mask=prompt.text_mask, pooled_projections=prompt.pooled, guidance=guidance,
                    return_dict=False)[0]
            if mode == "token_replace":
                stepped = scheduler.step(v[:, :, 1:], step, latents[:, :, 1:], return_dict=False)[0]
                latents = torch.cat([image, stepped], dim=2)
            else:
                latents = scheduler.step(v, step, latents, return_dict=False)[0]
    return latents / LATENT_SCALE, scheduler.sigmas


# -- against diffusers ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode,stability", [("token_replace", True), ("token_replace", False),
                                            ("latent_concat", True), ("skyreels", False)])
def test_run_equals_the_diffusers_pipeline_step_math(models, mode, stability):
    model, raw = models[mode], image_latent()
    cond = ImageConditioning(raw, "auto", stability, W, H)
    ours = run(model, cond, steps=2, shift=7.0, seed=4)
    expected, sigmas = reference_run(model, mode, raw, 2, 7.0, 4, stability)
    schedule = plan_schedule(2, 7.0)
    torch.testing.assert_close(schedule.sigmas.float(), sigmas.float(), atol=1e-6, rtol=0)
    assert float((ours.latent - expected).abs().max()) <= 1e-5
    assert ours.forwards == 2
    assert ours.drop_leading_frames == (4 if mode == "latent_concat" else 0)
    if mode == "token_replace":
        assert torch.equal(ours.latent[:, :, :1], raw)          # frame 0 IS the image latent
    # the image is read: another image gives another video
    other = run(model, ImageConditioning(image_latent(seed=5), "auto", stability, W, H))
    assert float((other.latent[:, :, 1:] - ours.latent[:, :, 1:]).abs().max()) > 1e-3


def test_token_replace_frame_0_is_the_image_and_t2v_is_not(models):
    model, raw = models["token_replace"], image_latent()
    i2v = run(model, ImageConditioning(raw, "token_replace"), steps=3, solver="dpm++2m")
    t2v = run(model, steps=3, solver="dpm++2m")
    assert torch.equal(i2v.latent[:, :, 0], raw[:, :, 0])
    assert float((t2v.latent[:, :, 0] - raw[:, :, 0]).abs().mean()) > 0.1
    assert type(model.image_condition) is ImageCondition       # restored after the run


def test_stability_and_dynamic_start(models):
    model, raw = models["latent_concat"], image_latent(scale=30.0)   # large, so 0.001 of it shows
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, :16].clone()))
    try:
        run(model, ImageConditioning(raw, stability=True), steps=1)
        run(model, ImageConditioning(raw, stability=False), steps=1)
    finally:
        handle.remove()
    noise = seeded_noise(LATENT, 4)
    mixed = noise * 0.999 + (raw * LATENT_SCALE).expand(LATENT) * 0.001
    torch.testing.assert_close(seen[0], mixed, atol=1e-6, rtol=0)
    assert torch.equal(seen[1], noise)
    assert float((seen[0] - seen[1]).abs().max()) > 1e-3
    assert recommended_shift(True) == 7.0 and recommended_shift(False) == 17.0


def test_latent_concat_input_channels_every_forward(models):
    model, raw = models["latent_concat"], image_latent()
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        result = run(model, ImageConditioning(raw), steps=2)
    finally:
        handle.remove()
    assert len(seen) == 2 and all(x.shape[1] == 33 for x in seen)
    for x in seen:
        assert torch.equal(x[:, 16:32, :1], raw * LATENT_SCALE) and not x[:, 16:32, 1:].any()
        assert torch.equal(x[:, 32], torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, *LATENT[3:]))
    assert any("drops the first 4" in note for note in result.notes)


# -- refusals ------------------------------------------------------------------------------------
def test_33_channel_model_without_an_image_is_refused(models):
    with pytest.raises(InvalidInputError, match=r"HunyuanVideo-I2V \(latent_concat\); give an image"):
        run(models["latent_concat"])


def test_image_with_keyframes_is_refused(models):
    keyframes = torch.zeros(1, 16, *LATENT[2:])
    with pytest.raises(InvalidInputError, match="image and keyframe_latent"):
        run(models["skyreels"], ImageConditioning(image_latent()), keyframe_latent=keyframes)


@pytest.mark.parametrize("mode,model_mode", [("latent_concat", "token_replace"), ("token_replace", "skyreels"),
                                             ("skyreels", "latent_concat")])
def test_a_mode_that_does_not_fit_the_model_is_refused(models, mode, model_mode):
    with pytest.raises(InvalidInputError, match=rf"i2v_mode='{mode}' needs a DiT with \d+ input channels"):
        run(models[model_mode], ImageConditioning(image_latent(), mode))


def test_keyframe_lora_model_with_an_image_is_refused():
    from hyvideo_core.lora import apply_loras, remove_loras
    from test_keyframe import keyframe_lora
    model = random_model(TINY)
    apply_loras(model, [keyframe_lora(model, extra=False)])
    try:
        assert model.config.in_channels == 32
        with pytest.raises(InvalidInputError, match="keyframe LoRA widened it"):
            run(model, ImageConditioning(image_latent()))
    finally:
        remove_loras(model)


def test_image_of_another_size_is_refused(models):
    small = torch.zeros(1, 16, 1, 2, 2)
    with pytest.raises(InvalidInputError, match="encoded for 16x16 pixels.*48x32"):
        run(models["token_replace"], ImageConditioning(small))


def test_token_replace_with_several_context_windows_is_refused(models):
    context = ContextWindows(length=5, overlap=1).check()        # 2 latent frames a window, 3 in the video
    with pytest.raises(InvalidInputError, match="context windows with token_replace"):
        sample(models["token_replace"], prompt_pair(TINY), SamplingOptions(steps=1, context=context), width=W,
               height=H, frames=F, image=ImageConditioning(image_latent()))


def test_bad_image_conditioning_values():
    with pytest.raises(InvalidInputError, match=r"\[B, 16, 1, h, w\]"):
        ImageConditioning(torch.zeros(1, 16, 2, 4, 6))
    with pytest.raises(InvalidInputError, match="mode: 'sideways' is not one of"):
        ImageConditioning(image_latent(), "sideways")


# -- T2V and the model untouched -----------------------------------------------------------------
def test_without_an_image_t2v_is_bit_identical_and_the_model_is_restored(models):
    model = models["token_replace"]
    before = run(model, steps=2)
    run(model, ImageConditioning(image_latent()), steps=2)

    def cancel(step, total):
        raise CancelledError("stop")
    with pytest.raises(CancelledError):
        sample(model, prompt_pair(TINY), SamplingOptions(steps=2), width=W, height=H, frames=F,
               image=ImageConditioning(image_latent()), hooks=SamplingHooks(progress=cancel))
    assert type(model.image_condition) is ImageCondition
    after = run(model, steps=2)
    assert torch.equal(before.latent, after.latent) and before.drop_leading_frames == 0


# -- the first frame's pixels ----------------------------------------------------------------------
def test_fit_first_frame_crops_another_aspect_and_notes_it():
    wide = torch.rand(3, 40, 100)                                 # [3, H, W]
    pixels, notes = fit_first_frame(wide, W, H)
    assert pixels.shape == (1, 3, 1, H, W) and float(pixels.min()) >= -1 and float(pixels.max()) <= 1
    assert any("another aspect ratio" in n and "centre-cropped" in n for n in notes)
    same, notes = fit_first_frame(torch.rand(H * 2, W * 2, 3), W, H)   # [H, W, 3], same aspect
    assert same.shape == (1, 3, 1, H, W) and notes == (f"image: resized from {W * 2}x{H * 2} to {W}x{H}",)
    _, notes = fit_first_frame(torch.rand(3, H, W), W - 3, H)
    assert any("rounded up" in n for n in notes)


def test_encode_first_frame_with_the_tiny_vae(vae, models):
    image = torch.rand(3, 50, 90, generator=torch.Generator().manual_seed(0))
    cond = encode_first_frame(vae, image, W, H, "auto", True, main=torch.device("cpu"), offload=torch.device("cpu"),
                              tiling=None)
    assert cond.latent.shape == (1, 16, 1, H // 8, W // 8) and cond.latent.dtype == torch.float32
    assert (cond.width, cond.height) == (W, H) and any("aspect" in n for n in cond.notes)
    posterior = vae.encode(fit_first_frame(image, W, H)[0])
    assert torch.equal(cond.latent, posterior.mode().float())
    assert cond.resolved_mode(models["latent_concat"].config) == "latent_concat"
    assert cond.text_interleave(models["token_replace"].config) == 4
    assert text_interleave("latent_concat") == 2 and text_interleave("skyreels") is None
    assert I2V_TEXT_TOKENS == {"token_replace": 396, "latent_concat": 540, "skyreels": 256}


def test_native_hunyuan_image_to_video_outputs_map_onto_our_image_conditioning():
    """ComfyUI's HunyuanImageToVideo: v1 (concat) carries the latent in the conditioning, v2 (replace)
    in frame 0 of its LATENT (with a noise_mask); 'custom' and no start image are refused by name."""
    from hyvideo_core.conditioning import image_conditioning_from_native
    from hyvideo_core.errors import InvalidInputError
    g = torch.Generator().manual_seed(3)
    image = torch.randn(1, 16, 1, 6, 10, generator=g)
    text = torch.randn(1, 5, 64, generator=g)
    mask = torch.ones(1, 1, 3, 6, 10)
    mask[:, :, :1] = 0
    v1 = image_conditioning_from_native([[text, {"pooled_output": torch.zeros(1, 32), "concat_latent_image": image,
                                                 "concat_mask": mask}]], stability=False)
    assert v1.mode == "latent_concat" and torch.equal(v1.latent, image) and (v1.width, v1.height) == (80, 48)
    assert v1.stability is False
    samples = torch.zeros(1, 16, 3, 6, 10)
    samples[:, :, :1] = image
    v2 = image_conditioning_from_native([[text, {"guiding_frame_index": 0}]], {"samples": samples, "noise_mask": mask})
    assert v2.mode == "token_replace" and torch.equal(v2.latent, image) and v2.stability is True
    with pytest.raises(InvalidInputError, match="latent: HunyuanImageToVideo 'v2 \\(replace\\)'"):
        image_conditioning_from_native([[text, {"guiding_frame_index": 0}]])
    with pytest.raises(InvalidInputError, match="custom"):
        image_conditioning_from_native([[text, {"ref_latent": image}]])
    with pytest.raises(InvalidInputError, match="carries no image"):
        image_conditioning_from_native([[text, {"pooled_output": torch.zeros(1, 32)}]])
