"""The one sampling loop: text-to-video, video-to-video, keyframe concat, image-to-video, true
CFG and cache policies all run through `sample`, which owns progress, previews and cancellation.

Image-to-video (`image=`, a conditioning.ImageConditioning; SPEC_NEXT 2.3-2.5): latent_concat and
SkyReels give the extra input channels that every forward concatenates after x (as keyframes do);
token_replace installs the DiT's `TokenReplace()` for the run and keeps latent frame 0 the clean
image latent before every forward and after every step. The loop reads the image object only
through its methods (`for_run`), so this module does not import the conditioning room.

Latents crossing this API (the v2v input, the keyframe conditioning, the result) are raw VAE
latents in ComfyUI's LATENT convention; the loop works in the model's scaled space
(see latent_format.py for the one conversion).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..errors import InvalidInputError, NumericsError, finite_number
from .cache import CachePolicy, CacheReport, installed
from ..text.templates import DEFAULT_NEGATIVE_PROMPT
from .guidance import GuidanceSettings, GuidedVelocity
from .callbacks import SamplingHooks
from ..model.config import needs_image
from .context_windows import ContextWindows, check_context
from .extras import check_for_run, installed_extras
from .latent_format import to_model_space, to_raw_latent
from .noise import LatentPlan, check_seed, noise_to_sigma, plan_from_latent, plan_latent, seeded_noise
from .numerics import describe_non_finite
from .preview import latent_to_rgb
from .schedule import SigmaSchedule, plan_schedule
from .solvers import make_solver
from .text_inputs import check_prompt, prompt_for_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 50
    shift: float = 7.0                 # official default for every resolution
    solver: str = "euler"              # or "dpm++2m"
    seed: int = 0
    embedded_guidance: float = 6.0
    cfg_scale: float = 1.0             # > 1 turns on true CFG (needs negative embeds)
    cfg_mode: str = "batched"          # or "sequential" (half the activation peak)
    denoise: float = 1.0               # < 1: video-to-video strength
    start_step: int = 0
    end_step: int | None = None
    add_noise: bool = True             # False: the input latent is already noised to the start sigma
    context: ContextWindows | None = None   # context windows for long videos (context_windows.py)
    riflex_index: int = 0              # RIFLEx temporal RoPE fix; 0 = off, 4 for HunyuanVideo (extras.py)
    cfg_zero_star: bool = False        # CFG-Zero*'s optimised scale under true CFG (guidance.py)
    zero_init_steps: int = 0           # CFG-Zero*'s zero-init: the first N steps output zero velocity
    enhance_weight: float = 0.0        # Enhance-A-Video (FETA) weight; 0 = off (enhance.py)

    @property
    def guidance(self) -> GuidanceSettings:
        return GuidanceSettings(self.embedded_guidance, self.cfg_scale, self.cfg_mode, self.cfg_zero_star,
                                self.zero_init_steps)


@dataclass
class SamplingResult:
    latent: torch.Tensor               # raw VAE latent [B,16,T,h,w] (ComfyUI LATENT convention)
    plan: LatentPlan                   # generated size and any snapping of the requested one
    schedule: SigmaSchedule
    forwards: int                      # DiT forward calls
    cache: CacheReport | None = None
    notes: tuple[str, ...] = field(default=())   # size snapping and unused inputs, also logged
    # Pixel frames to drop after decoding (latent_concat I2V: the reference drops the first 4);
    # a LATENT carries it as "hyvideo_drop_frames".
    drop_leading_frames: int = 0


@dataclass(frozen=True)
class _Inputs:
    plan: LatentPlan
    init: torch.Tensor | None          # scaled v2v latent
    concat: torch.Tensor | None        # scaled keyframe conditioning, or the I2V image channels (+ mask)
    first: object | None = None        # conditioning.image.FirstFrameRun of an image-to-video run


def sample(model, embeds, options: SamplingOptions = SamplingOptions(), *, width: int | None = None,
           height: int | None = None, frames: int | None = None, batch_size: int = 1,
           init_latent: torch.Tensor | None = None, keyframe_latent: torch.Tensor | None = None,
           cache: CachePolicy | None = None, hooks: SamplingHooks | None = None,
           device: torch.device | str | None = None, image=None) -> SamplingResult:
    """Sample a video latent. Give the size (width, height, frames) or an `init_latent` (v2v).
    `image`: a conditioning.ImageConditioning (image-to-video; its mode must fit the DiT)."""
    if not isinstance(options, SamplingOptions):
        raise InvalidInputError(f"options: expected SamplingOptions, got {type(options).__name__}.")
    schedule = plan_schedule(options.steps, options.shift, options.denoise, options.start_step, options.end_step)
    solver = make_solver(options.solver, seed=options.seed)
    guidance = options.guidance
    guidance.check()
    check_seed(options.seed)
    _check_cache(cache)
    context = check_context(options.context)
    notes: list[str] = []
    inputs = _resolve_inputs(model, width, height, frames, batch_size, init_latent, keyframe_latent, options, notes,
                             image)
    _check_image_run(inputs, context, schedule, options, notes)
    _check_embeds(model, embeds, guidance, inputs.plan.batch, notes)
    if not model.config.guidance_embed:
        _note(notes, f"this DiT has no guidance embedding; embedded_guidance={guidance.embedded} is not used")
    check_for_run(model, options, inputs.plan.shape, schedule, lambda message: _note(notes, message))
    hooks = hooks or SamplingHooks()
    device = torch.device(device) if device is not None else next(model.parameters()).device

    batch = inputs.plan.batch
    negative = prompt_for_batch(embeds.negative, batch, device) if guidance.true_cfg else None
    velocity = GuidedVelocity(model, guidance, prompt_for_batch(embeds.positive, batch, device), negative,
                              None if inputs.concat is None else inputs.concat.to(device), first_step=schedule.start)
    if context is not None:   # one forward per window, blended (the plain velocity when the latent fits one)
        velocity = context.velocity(velocity, inputs.plan.shape[2], hooks, schedule.active_steps)
    x = _start_latent(inputs, schedule, options, device)
    total = schedule.active_steps
    first = None if inputs.first is None else inputs.first.to(device)
    pin = first.pin if first is not None and first.pins_first_frame else None   # token_replace only
    if pin is not None:
        x = pin(x)
    with installed(model, cache if cache is not None else model.cache), \
            installed_extras(model, options, inputs.plan.shape), installed_image_condition(model, first):
        policy = model.cache
        if policy is not None:
            policy.start_run(total)
        solver.reset()
        try:
            with torch.no_grad():
                x = _run_steps(x, velocity, solver, schedule, hooks, pin)
            report = policy.report() if policy is not None else None
        except BaseException:
            x = velocity = None
            raise
        finally:
            solver.reset()          # drop the solver's history and the cached tensors, also on cancel
            if policy is not None:
                policy.release()
    latent = to_raw_latent(x) if first is None else first.finish(to_raw_latent(x))
    drop = 0 if first is None else first.drop_leading_frames
    return SamplingResult(latent, inputs.plan, schedule, velocity.forwards, report,
                          (*inputs.plan.adjustments, *notes), drop)


@contextmanager
def installed_image_condition(model, first) -> Iterator[None]:
    """The DiT's image condition for an I2V run (token_replace: TokenReplace()), the previous one
    restored after, also on errors and cancels. Nothing is touched without an image."""
    if first is None or not first.pins_first_frame:
        yield                                   # the concat modes need nothing on the model
        return
    if not hasattr(model, "image_condition"):
        raise InvalidInputError("image: token_replace needs a HunyuanVideo DiT that reads `image_condition`; this "
                                f"model ({type(model).__name__}) does not.")
    previous = model.image_condition
    model.image_condition = first.condition()
    try:
        yield
    finally:
        model.image_condition = previous


def _check_cache(cache) -> None:
    """A cache policy's threshold must be a finite number (inf would skip every block)."""
    threshold = getattr(cache, "threshold", None)
    if cache is not None and threshold is not None:
        finite_number(f"{getattr(cache, 'name', 'cache')} threshold", threshold, "0 disables skipping.")


def _note(notes: list[str], message: str) -> None:
    """Something the user asked for that changes or is not used: logged and returned."""
    log.warning("HunyuanVideo sampling: %s.", message)
    notes.append(message)


def _run_steps(x, velocity, solver, schedule: SigmaSchedule, hooks: SamplingHooks, pin=None) -> torch.Tensor:
    """`pin(x)` (token_replace) puts the clean image latent back into frame 0 after every step. The
    reference steps frames 1.. only and re-attaches frame 0; our solvers (euler, dpm++2m, unipc)
    are elementwise in the latent, with per-element histories, so stepping the whole latent and
    then overwriting frame 0 gives frames 1.. exactly what stepping them alone gives."""
    total = schedule.active_steps
    v = None
    try:
        for k, i in enumerate(schedule.indices()):
            hooks.check_cancelled(k, total)
            v = velocity(x, schedule.timestep(i), k)
            _check_finite(v, k, total, lambda: describe_non_finite(velocity, x, schedule.timestep(i), k))
            if hooks.preview is not None:
                hooks.preview(k + 1, total, latent_to_rgb(x - v.float() * float(schedule.sigmas[i])))
            x = solver.step(x, v, i, schedule.sigmas)
            if pin is not None:
                x = pin(x)
            v = None
            if hooks.progress is not None:
                hooks.progress(k + 1, total)
        return x
    except BaseException:
        # The traceback keeps this frame alive: drop the step buffers before propagating.
        x = v = None
        raise


def _check_finite(v: torch.Tensor, step: int, total: int, diagnose=None) -> None:
    """Fail at the first bad step instead of finishing a video that decodes to black; `diagnose()`
    (numerics.py: re-runs the step once to name the module and the LoRAs) only after a failure."""
    if not bool(torch.isfinite(v).all()):
        found = f" {diagnose()}" if diagnose is not None else ""
        raise NumericsError(
            f"Sampling step {step + 1} of {total}: the model returned NaN/inf velocities.{found} HunyuanVideo's "
            "activations overflow float16; load the model with bf16 (or fp32) compute. If it happens in bf16, the "
            "weights file or a LoRA may be damaged.")


def _start_latent(inputs: _Inputs, schedule: SigmaSchedule, options: SamplingOptions, device) -> torch.Tensor:
    sigma = schedule.start_sigma
    if inputs.init is not None and not options.add_noise:
        return inputs.init.to(device).float()
    noise = seeded_noise(inputs.plan.shape, options.seed, device)
    if options.context is not None:
        noise = options.context.shuffle_noise(noise, options.seed)   # FreeNoise (when on and windows are used)
    if inputs.init is None:
        if sigma == 1.0 and inputs.first is not None:
            return inputs.first.start(noise)      # I2V stability: 0.999 noise + 0.001 image latent
        return noise if sigma == 1.0 else noise * sigma
    return noise_to_sigma(inputs.init.to(device), noise, sigma)


def _resolve_inputs(model, width, height, frames, batch_size, init_latent, keyframe_latent,
                    options: SamplingOptions, notes: list[str], image=None) -> _Inputs:
    if init_latent is not None:
        plan = plan_from_latent(tuple(init_latent.shape))
        asked = {"width": width, "height": height, "frames": frames}
        implied = {"width": plan.width, "height": plan.height, "frames": plan.frames}
        wrong = {k: v for k, v in asked.items() if v is not None and v != implied[k]}
        if batch_size not in (1, plan.batch):
            wrong["batch_size"] = batch_size
        if wrong:
            raise InvalidInputError(
                f"init_latent: shape {list(init_latent.shape)} means {plan.batch} video(s) of "
                f"{plan.width}x{plan.height}x{plan.frames}, but {wrong} was also given; leave the size unset for "
                "video-to-video.")
        if options.denoise == 1.0 and options.start_step == 0 and options.add_noise:
            _note(notes, "init_latent with denoise=1.0 is fully replaced by noise; only its shape is used")
    elif None in (width, height, frames):
        raise InvalidInputError("sample: give width, height and frames, or an init_latent for video-to-video.")
    else:
        plan = plan_latent(width, height, frames, batch_size)
    init = None if init_latent is None else to_model_space(init_latent.float())
    if image is not None:
        if keyframe_latent is not None:
            raise InvalidInputError(
                "image and keyframe_latent: give one of them. An image-to-video model takes the first frame as "
                "`image`; the keyframe LoRA's model takes first/last frames as keyframe_latent.")
        if not hasattr(image, "for_run"):
            raise InvalidInputError(
                f"image: expected an ImageConditioning (hyvideo_core.run.encode_first_frame), got "
                f"{type(image).__name__}.")
        first = image.for_run(model, plan)
        return _Inputs(plan, init, first.concat, first)
    return _Inputs(plan, init, _keyframe_input(model, keyframe_latent, plan))


def _check_image_run(inputs: _Inputs, context, schedule: SigmaSchedule, options: SamplingOptions,
                     notes: list[str]) -> None:
    """I2V combinations that cannot work are refused before the first step; the rest are noted."""
    first = inputs.first
    if first is None:
        return
    frames = inputs.plan.shape[2]
    if context is not None and frames > context.latent_length:
        if first.mode == "token_replace":
            raise InvalidInputError(
                f"context windows with token_replace image-to-video: {frames} latent frames need several windows, "
                "and every window's first frame would be modulated as the image frame. Turn context windows off, "
                f"or use at most {context.length} frames.")
        _note(notes, "context windows with image-to-video: only the windows holding latent frame 0 see the image")
    from_noise = inputs.init is None and schedule.start_sigma == 1.0
    if first.stability and not from_noise:
        _note(notes, "i2v stability mixes the image into the start noise of a run from pure noise only; this run "
                     "starts from a partly denoised latent, so it is not used")
    if first.drop_leading_frames:
        _note(notes, f"latent_concat image-to-video: the reference drops the first {first.drop_leading_frames} "
                     "decoded frames; the decode drops them")


def _keyframe_input(model, keyframe_latent, plan: LatentPlan) -> torch.Tensor | None:
    extra = model.config.in_channels - model.config.out_channels
    if keyframe_latent is None:
        if needs_image(model.config):
            raise InvalidInputError(
                "image: this is HunyuanVideo-I2V (latent_concat); give an image. The DiT takes 33 input "
                "channels (noise, image latent, mask): encode the first frame with run.encode_first_frame.")
        if extra:
            raise InvalidInputError(
                f"keyframe_latent: this DiT takes {model.config.in_channels} input channels (a keyframe model, or "
                "SkyReels-V1 I2V); give the encoded keyframe video as keyframe_latent, or for SkyReels an image.")
        return None
    if extra == 0:
        raise InvalidInputError(
            "keyframe_latent: this DiT takes 16 input channels (text-to-video); load the keyframe LoRA to use "
            "keyframes.")
    want = (extra, *plan.shape[2:])
    if keyframe_latent.ndim != 5 or tuple(keyframe_latent.shape[1:]) != want or \
            keyframe_latent.shape[0] not in (1, plan.batch):
        raise InvalidInputError(
            f"keyframe_latent: expected [1 or {plan.batch}, {', '.join(map(str, want))}] to match the video, "
            f"got {list(keyframe_latent.shape)}.")
    return to_model_space(keyframe_latent.float()).expand(plan.batch, *want)


def _check_embeds(model, embeds, guidance: GuidanceSettings, batch: int, notes: list[str]) -> None:
    c = model.config
    if not hasattr(embeds, "positive"):
        raise InvalidInputError(
            f"embeds: expected an object with .positive (and .negative), got {type(embeds).__name__}.")
    check_prompt(embeds.positive, "positive", c.text_dim, c.pooled_text_dim, batch)
    negative = getattr(embeds, "negative", None)
    if guidance.true_cfg:
        if negative is None:
            raise InvalidInputError(
                f"cfg_scale={guidance.cfg_scale:g} (true CFG) needs a negative prompt: encode one with the positive "
                "prompt (the Text Encode node's negative_prompt; the reference's default is "
                f"'{DEFAULT_NEGATIVE_PROMPT}'), or set cfg_scale / true_cfg_scale to 1 (the embedded guidance "
                "still applies).")
        check_prompt(negative, "negative", c.text_dim, c.pooled_text_dim, batch)
    elif negative is not None:
        _note(notes, f"negative embeds are not used at cfg_scale={guidance.cfg_scale} (true CFG needs cfg_scale > 1)")
