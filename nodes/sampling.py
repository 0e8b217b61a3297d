"""The sampler node: text-to-video, video-to-video (a LATENT input) and keyframes, with progress,
latent previews and ComfyUI's interrupt. Its LATENT output holds raw VAE latents, as ComfyUI's
native HunyuanVideo nodes do, so native VAE Decode works on it and native Empty HunyuanLatentVideo
can feed it."""
from __future__ import annotations

import dataclasses

from hyvideo_core.conditioning import needs_image
from hyvideo_core.errors import InvalidInputError
from hyvideo_core.run import MAX_FRAMES, MAX_SEED, MAX_SIZE, MAX_STEPS, check_size, sample_video
from hyvideo_core.run.choices import CFG_MODES, DEFAULTS, SOLVER_NAMES
from hyvideo_core.sampling import SamplingHooks, SamplingOptions, plan_from_latent, plan_latent

from .host import host
from .loaders import check_inputs
from .vae import DROP_FRAMES_KEY          # LATENT key: leading decoded frames HunyuanVideo VAE Decode drops



def sampling_hooks(total: int, node_id: str | None) -> SamplingHooks:
    """Progress with a latent preview (the middle latent frame) every step; ComfyUI's interrupt."""
    bar = host.progress(total, node_id=node_id)

    def preview(step: int, steps: int, rgb) -> None:
        bar.update(step, steps, preview_rgb=rgb[0, rgb.shape[1] // 2])

    def cancelled() -> bool:
        host.check_interrupt()   # raises the host's interrupt
        return False

    return SamplingHooks(preview=preview, cancelled=cancelled)


class HyVideoSampler:
    DESCRIPTION = ("Samples a HunyuanVideo latent. Defaults are the official settings (50 steps, shift 7, embedded "
                   "guidance 6, 129 frames) at 960x544; the model was trained for 1280x720 and 960x544 "
                   "(and their portrait / square variants). Connect samples for video-to-video and keyframes for "
                   "first/last-frame control; both then set the size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("HYVIDEO_MODEL", {"tooltip": "From the model loader (or LoRA Select)."}),
            "embeds": ("HYVIDEO_EMBEDS", {"tooltip": "From HunyuanVideo Text Encode (or the conditioning bridge)."}),
            "width": ("INT", {"default": DEFAULTS.width, "min": 16, "max": MAX_SIZE, "step": 16,
                              "tooltip": "Video width in pixels, a multiple of 16 (others are rounded up and "
                                         "reported). Official: 1280 (720p) or 960 (540p)."}),
            "height": ("INT", {"default": DEFAULTS.height, "min": 16, "max": MAX_SIZE, "step": 16,
                               "tooltip": "Video height in pixels, a multiple of 16. Official: 720 or 544."}),
            "frames": ("INT", {"default": DEFAULTS.frames, "min": 1, "max": MAX_FRAMES, "step": 4,
                               "tooltip": "Frame count, 4k+1 (others are rounded down and reported); 129 = 5.4 s "
                                          "at 24 fps (official)."}),
            "steps": ("INT", {"default": DEFAULTS.steps, "min": 1, "max": MAX_STEPS, "tooltip": "Denoising steps (official: 50)."}),
            "shift": ("FLOAT", {"default": DEFAULTS.shift, "min": 0.0, "max": 100.0, "step": 0.1,
                                "tooltip": "Flow shift of the sigma schedule (official: 7)."}),
            "embedded_guidance": ("FLOAT", {"default": DEFAULTS.embedded_guidance, "min": 0.0, "max": 30.0, "step": 0.1,
                                            "tooltip": "Guidance strength embedded in the distilled model "
                                                       "(official: 6). Costs nothing."}),
            "true_cfg_scale": ("FLOAT", {"default": DEFAULTS.cfg_scale, "min": 1.0, "max": 30.0, "step": 0.1,
                                         "tooltip": "Classifier-free guidance with the negative prompt; 1 = off. "
                                                    "Above 1 every step runs the model twice."}),
            "cfg_mode": (list(CFG_MODES), {"default": DEFAULTS.cfg_mode,
                                            "tooltip": "With true CFG: batched (one forward of both prompts, "
                                                       "faster) or sequential (half the activation memory)."}),
            "seed": ("INT", {"default": DEFAULTS.seed, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "Noise seed; the same seed gives the same noise on any device."}),
            "denoise": ("FLOAT", {"default": DEFAULTS.denoise, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "With a samples input (video-to-video): how much to change it; 1 = "
                                             "start from pure noise."}),
            "solver": (list(SOLVER_NAMES), {"default": DEFAULTS.solver,
                                            "tooltip": "euler (official), dpm++2m, unipc (UniPC bh2) or "
                                                       "dpm++2m_sde (adds seeded noise at every step)."}),
        }, "optional": {
            "samples": ("LATENT", {"tooltip": "A video latent to start from (video-to-video with denoise < 1), e.g. "
                                              "from HunyuanVideo VAE Encode; its size replaces width/height/frames."}),
            "cache": ("HYVIDEO_CACHE", {"tooltip": "A cache policy: TeaCache, First Block Cache, EasyCache or MagCache."}),
            "keyframes": ("HYVIDEO_KEYFRAMES", {"tooltip": "From Keyframe Encode, with the keyframe LoRA on the "
                                                           "model; its size replaces width/height/frames."}),
            "extras": ("HYVIDEO_EXTRAS", {"tooltip": "From HunyuanVideo Sampling Extras: RIFLEx, CFG-Zero*, "
                                                     "Enhance-A-Video (all off unless set there)."}),
            "context": ("HYVIDEO_CONTEXT", {"tooltip": "From HunyuanVideo Context Windows: long videos sampled "
                                                       "in overlapping windows (no effect when the video fits one)."}),
            "image_cond": ("HYVIDEO_IMAGE_COND", {
                "tooltip": "From HunyuanVideo I2V Encode, with an image-to-video model: the video starts from that "
                           "image; its size replaces width/height (frames stays). Shift 7 for stability, 17 for "
                           "dynamic."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("The video latent (raw VAE latents, ComfyUI's HunyuanVideo LATENT). With the v1 concat I2V "
                       "model it also says to drop the first 4 decoded frames (hyvideo_drop_frames), which the "
                       "HunyuanVideo VAE Decode does and ComfyUI's native VAE Decode ignores.",)
    FUNCTION = "sample"
    CATEGORY = "HunyuanVideo/sampling"

    def sample(self, model, embeds, width, height, frames, steps, shift, embedded_guidance, true_cfg_scale, cfg_mode,
               seed, denoise, solver, samples=None, cache=None, keyframes=None, unique_id=None, extras=None, context=None,
               image_cond=None):
        check_inputs(solver=(solver, SOLVER_NAMES), cfg_mode=(cfg_mode, CFG_MODES))
        check_image_cond(model, image_cond, keyframes)
        options = SamplingOptions(steps=steps, shift=shift, solver=solver, seed=seed,
                                  embedded_guidance=embedded_guidance, cfg_scale=true_cfg_scale, cfg_mode=cfg_mode,
                                  denoise=denoise)
        if extras is not None:
            options = extras.apply(options)     # dataclasses.replace of the extras' fields
        if context is not None:
            options = dataclasses.replace(options, context=context)
        init = None if samples is None else samples["samples"]
        size, notes = self._size(width, height, frames, init, keyframes, image_cond)
        unused = sorted(set(samples or {}) - {"samples"})
        if unused:
            notes.append(f"the samples input's {unused} (e.g. a noise mask) are not used by this sampler")
        size = None if init is not None else size
        run = sample_video if model.parallel is None else model.parallel.sample   # one video, several devices
        image = {} if image_cond is None else {"image": image_cond}
        with host.interruptible():
            outcome = run(model.loaded, embeds, options, size=size, init_latent=init,
                          keyframe_latent=None if keyframes is None else keyframes.latent, loras=model.loras,
                          cache=cache, hooks=sampling_hooks(steps, unique_id), swap=model.swap,
                          budget_gb=model.budget_gb, host=host, **image)
        result = outcome.result
        notes += outcome.notes
        plan = result.plan
        notes.insert(0, f"{plan.width}x{plan.height}x{plan.frames}, {result.schedule.active_steps} steps, "
                        f"{result.forwards} model calls")
        if context is not None:
            notes.insert(1, context.describe(result.latent.shape[2]))
        latent = {"samples": result.latent.cpu()}
        drop = result.drop_leading_frames
        if drop:
            latent[DROP_FRAMES_KEY] = drop
            notes.append(f"the LATENT carries {DROP_FRAMES_KEY}={drop}: HunyuanVideo VAE Decode drops those frames, "
                         "ComfyUI's native VAE Decode keeps them")
        return {"ui": {"text": notes}, "result": (latent,)}

    @staticmethod
    def _size(width, height, frames, init, keyframes, image_cond=None) -> tuple[tuple[int, int, int], list[str]]:
        """The video size: from the samples latent, else the keyframes, else the image (and the frames
        widget), else the widgets (snapped)."""
        if init is not None:
            plan = plan_from_latent(tuple(init.shape))
            source = "the samples input"
        elif keyframes is not None:
            plan = plan_latent(keyframes.width, keyframes.height, keyframes.frames)
            source = "the keyframes"
        elif image_cond is not None:   # the image's size, the frames widget (snapped and reported)
            plan = check_size(image_cond.width, image_cond.height, frames, ("width", "height", "frames"))
            notes = list(plan.adjustments)
            if (plan.width, plan.height) != (width, height):
                notes.append(f"size {plan.width}x{plan.height} taken from image_cond; the width/height widgets "
                             f"({width}x{height}) are not used")
            return (plan.width, plan.height, plan.frames), notes
        else:
            plan = check_size(width, height, frames, ("width", "height", "frames"))
            return (plan.width, plan.height, plan.frames), list(plan.adjustments)
        notes = []
        if (plan.width, plan.height, plan.frames) != (width, height, frames):
            notes.append(f"size {plan.width}x{plan.height}x{plan.frames} taken from {source}; the width/height/"
                         f"frames widgets ({width}x{height}x{frames}) are not used")
        return (plan.width, plan.height, plan.frames), notes


def check_image_cond(model, image_cond, keyframes) -> None:
    """Refuse before anything runs: an I2V-only model without image_cond, or image_cond with keyframes."""
    in_channels = model.transformer.config.in_channels
    if image_cond is None and needs_image(model.transformer.config):
        raise InvalidInputError(
            f"image_cond: this model takes {in_channels} input channels (HunyuanVideo-I2V v1 concat): it only makes "
            "videos from an image. Connect a HunyuanVideo I2V Encode to the sampler's image_cond input, or load a "
            "text-to-video model.")
    if image_cond is not None and keyframes is not None:
        raise InvalidInputError(
            "image_cond and keyframes: give one of them. keyframes drive the keyframe LoRA (first/last frame), "
            "image_cond an image-to-video model (first frame); disconnect the one you do not use.")


NODE_CLASS_MAPPINGS = {"HyVideoSampler": HyVideoSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoSampler": "HunyuanVideo Sampler"}
