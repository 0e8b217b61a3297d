"""Image-to-video: the first frame's latent and how the one sampling loop uses it (SPEC_NEXT 2.2-2.5).

The three HunyuanVideo I2V checkpoints take the image in different ways, told apart by the DiT's
input channels (`model.config.in_channels`; the file cannot say more, SPEC_NEXT 2.1):
- token_replace (16 channels, the current HunyuanVideo-I2V): latent frame 0 is the clean image
  latent before every forward and after every step (only frames 1.. are stepped), and the DiT
  modulates frame 0's tokens with time_in(0) + vector_in(pooled) (`model.image_condition =
  TokenReplace()`). Text: the I2V template with every 4th image token (144).
- latent_concat (33 channels, the first HunyuanVideo-I2V): x_in = [x, image latent in frame 0 and
  zeros after, mask (1 on frame 0)] every forward; all frames are stepped. The reference drops the
  first 4 decoded pixel frames. Text: every 2nd image token (288).
- skyreels (32 channels, SkyReels-V1-Hunyuan-I2V): x_in = [x, image latent in frame 0 and zeros
  after]; the text goes through the T2V text-only template (diffusers' SkyReels pipeline).
Stability (`--i2v-stability`, recommended shift 7): the start latent is 0.999 noise + 0.001 image
latent repeated over all frames; dynamic (shift 17): plain noise (SPEC_NEXT 2.5).

The latent crossing this API is raw (ComfyUI LATENT convention, the posterior's mode as the
reference's `.mode()` / diffusers' "argmax"); the loop scales it into the model's space, as for
keyframes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..errors import InvalidInputError
from ..model.config import VARIANTS
from ..model.image_condition import ImageCondition, TokenReplace
from ..sampling.latent_format import LATENT_CHANNELS, to_model_space
from ..runtime.planner import TEXT_TOKENS
from ..sampling.noise import plan_latent
from .keyframes import fit_image as _fit_rgb

I2V_MODES = ("auto", "token_replace", "latent_concat", "skyreels")
MODE_CHANNELS = {"token_replace": 16, "skyreels": 32, "latent_concat": 33}
_BY_CHANNELS = {channels: mode for mode, channels in MODE_CHANNELS.items()}
# Every k-th image token the text encoder keeps (SPEC_NEXT 2.6); None: SkyReels encodes text only.
I2V_INTERLEAVE = {"token_replace": 4, "latent_concat": 2, "skyreels": None}
# The text tokens the DiT sees (image tokens + text_len - 4), for the memory plan.
I2V_TEXT_TOKENS = {mode: TEXT_TOKENS[mode] for mode in MODE_CHANNELS}
# Pixel frames the reference drops after decoding (latent_concat only, SPEC_NEXT 2.4).
DROP_LEADING_FRAMES = {"token_replace": 0, "latent_concat": 4, "skyreels": 0}
STABILITY_MIX = 0.999            # start = 0.999 * noise + 0.001 * image latent (SPEC_NEXT 2.5)


def recommended_shift(stability: bool = True) -> float:
    """The official scripts' flow shift: 7 with --i2v-stability, 17 for dynamic (SPEC_NEXT 2.5)."""
    return 7.0 if stability else 17.0


def check_mode(mode, parameter: str = "i2v_mode") -> str:
    if not isinstance(mode, str) or mode not in I2V_MODES:
        raise InvalidInputError(f"{parameter}: {mode!r} is not one of {list(I2V_MODES)} (auto: from the DiT's "
                                "input channels: 16 token_replace, 32 skyreels, 33 latent_concat).")
    return mode


def mode_for_channels(in_channels: int, mode: str = "auto", what: str = "this DiT") -> str:
    """The I2V mode for a DiT with `in_channels` inputs; an explicit mode must fit the channels."""
    check_mode(mode)
    expected = _BY_CHANNELS.get(in_channels)
    if expected is None:
        raise InvalidInputError(
            f"image: {what} takes {in_channels} input channels; HunyuanVideo image-to-video models take 16 "
            "(token_replace), 32 (SkyReels-V1 I2V) or 33 (latent_concat).")
    if mode != "auto" and mode != expected:
        raise InvalidInputError(
            f"i2v_mode={mode!r} needs a DiT with {MODE_CHANNELS[mode]} input channels, but {what} takes "
            f"{in_channels} (variant {VARIANTS.get(in_channels, '?')}, which is {expected}); use i2v_mode='auto' "
            f"or load the matching model.")
    return expected


def text_interleave(mode: str) -> int | None:
    """`image_embed_interleave` for the text encoder (4 / 2), or None: encode the text only (SkyReels)."""
    if mode == "auto":
        raise InvalidInputError("text_interleave: resolve the mode first (ImageConditioning.resolved_mode).")
    return I2V_INTERLEAVE[check_mode(mode)]


@dataclass(frozen=True)
class ImageConditioning:
    """The encoded first frame: what `sampling.sample(image=...)` / `run.sample_video(image=...)` take."""

    latent: torch.Tensor              # raw VAE latent of the first frame [1 or B, 16, 1, h, w], float32 CPU
    mode: str = "auto"                # one of I2V_MODES
    stability: bool = True            # start from 0.999 noise + 0.001 image latent
    width: int = 0                    # the pixel size it was fitted to (multiples of 16)
    height: int = 0
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self):
        check_mode(self.mode, "ImageConditioning.mode")
        if not isinstance(self.stability, bool):
            raise InvalidInputError(f"ImageConditioning.stability: expected True or False, got {self.stability!r}.")
        lat = self.latent
        if not isinstance(lat, torch.Tensor) or lat.ndim != 5 or lat.shape[1] != LATENT_CHANNELS or lat.shape[2] != 1:
            got = list(lat.shape) if isinstance(lat, torch.Tensor) else type(lat).__name__
            raise InvalidInputError(f"ImageConditioning.latent: expected a raw VAE latent [B, 16, 1, h, w] of one "
                                    f"frame, got {got}.")

    def resolved_mode(self, model_config) -> str:
        """auto: 33 channels -> latent_concat, 32 -> skyreels, 16 -> token_replace."""
        return mode_for_channels(model_config.in_channels, self.mode)

    def text_interleave(self, model_config) -> int | None:
        """`image_embed_interleave` for this model (4 token_replace, 2 latent_concat), None = text only."""
        return text_interleave(self.resolved_mode(model_config))

    def for_run(self, model, plan) -> "FirstFrameRun":
        """What the loop needs for a run of `plan` (LatentPlan) on `model`; refuses what cannot work."""
        mode = self.resolved_mode(model.config)
        state = getattr(model, "lora_state", None)
        base = getattr(state, "base_config", None)
        if mode == "skyreels" and base is not None and base.in_channels != model.config.in_channels:
            raise InvalidInputError(
                "image: this DiT takes 32 input channels because the keyframe LoRA widened it (a keyframe model), "
                "not because it is SkyReels-V1 I2V; give keyframes (keyframe_latent) instead of an image, or "
                "remove the keyframe LoRA and load an image-to-video model.")
        b, _, t, h, w = plan.shape
        lat = self.latent
        if tuple(lat.shape[3:]) != (h, w) or lat.shape[0] not in (1, b):
            raise InvalidInputError(
                f"image: its latent {list(lat.shape)} was encoded for {lat.shape[4] * 8}x{lat.shape[3] * 8} pixels "
                f"(batch {lat.shape[0]}), but the video is {plan.width}x{plan.height} (latent {h}x{w}, batch {b}); "
                "encode the image at the sampler's width and height.")
        image = to_model_space(lat.float()).expand(b, -1, -1, -1, -1).contiguous()
        concat = None
        if mode != "token_replace":
            padded = torch.zeros(b, LATENT_CHANNELS, t, h, w)
            padded[:, :, :1] = image
            parts = [padded]
            if mode == "latent_concat":
                mask = torch.zeros(b, 1, t, h, w)       # 1 on frame 0; not scaled (it is no latent)
                mask[:, :, :1] = 1.0
                parts.append(mask)
            concat = torch.cat(parts, dim=1)
        return FirstFrameRun(mode, image, lat.float().expand(b, -1, -1, -1, -1), concat, self.stability,
                             DROP_LEADING_FRAMES[mode])


@dataclass(frozen=True)
class FirstFrameRun:
    """The image prepared for one sampling run (model space, the run's batch)."""

    mode: str
    image: torch.Tensor               # model space [B, 16, 1, h, w]
    raw: torch.Tensor                 # the raw latent [B, 16, 1, h, w] (the result's frame 0 for token_replace)
    concat: torch.Tensor | None       # extra input channels [B, 16 (+1 mask), T, h, w], or None (token_replace)
    stability: bool
    drop_leading_frames: int

    @property
    def pins_first_frame(self) -> bool:
        return self.mode == "token_replace"

    def condition(self) -> ImageCondition:
        """What the DiT itself needs for the run (`model.image_condition`)."""
        return TokenReplace() if self.mode == "token_replace" else ImageCondition()

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """The start latent from pure noise: stability mixes in the image latent on every frame."""
        if not self.stability:
            return noise
        return noise * STABILITY_MIX + self.image.to(noise.device, noise.dtype) * (1.0 - STABILITY_MIX)

    def to(self, device) -> "FirstFrameRun":
        """The image latent on the sampling device, moved once (`pin` uses it at every step; the
        concat channels travel with the guided velocity)."""
        return replace(self, image=self.image.to(device))

    def pin(self, x: torch.Tensor) -> torch.Tensor:
        """token_replace: latent frame 0 is the clean image latent (x is changed in place and returned)."""
        x[:, :, :1] = self.image.to(x.dtype)
        return x

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        """The result latent: token_replace's frame 0 is exactly the given raw image latent."""
        if self.pins_first_frame:
            raw[:, :, :1] = self.raw.to(raw.device, raw.dtype)
        return raw


# -- pixels -> latent ---------------------------------------------------------------------------
def fit_image(image: torch.Tensor, width: int, height: int, parameter: str = "image"
              ) -> tuple[torch.Tensor, tuple[str, ...]]:
    """An image [3, H, W] or [H, W, 3] (or ComfyUI's [1, H, W, 3]) in 0..1 -> [1, 3, 1, h, w] in -1..1:
    resized so its short side covers the target, then centre-cropped to width x height snapped to
    multiples of 16 (the sampler's size). Notes say when the size or the aspect ratio changed."""
    plan = plan_latent(width, height, 1)
    notes = list(plan.adjustments)
    hwc = _as_hwc(image, parameter)
    h, w = hwc.shape[-3], hwc.shape[-2]
    rgb = _fit_rgb(hwc, plan.width, plan.height, parameter)
    if (w, h) != (plan.width, plan.height):
        if w * plan.height != h * plan.width:
            notes.append(f"{parameter}: {w}x{h} has another aspect ratio than the video's {plan.width}x{plan.height}; "
                         "it was resized to cover it and centre-cropped (the edges are cut)")
        else:
            notes.append(f"{parameter}: resized from {w}x{h} to {plan.width}x{plan.height}")
    return (rgb * 2 - 1).reshape(1, 3, 1, plan.height, plan.width), tuple(notes)


def _as_hwc(image, parameter: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise InvalidInputError(f"{parameter}: expected a torch tensor [3, H, W] or [H, W, 3] in 0..1, got "
                                f"{type(image).__name__}.")
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3, 4):
        return image.movedim(0, -1)          # channels first
    return image


def image_conditioning_from_native(positive, latent: dict | None = None, stability: bool = True) -> ImageConditioning:
    """ComfyUI's native HunyuanImageToVideo outputs -> our ImageConditioning, where they map:
    "v1 (concat)" puts the first frame's raw latent in the conditioning (`concat_latent_image`,
    with `concat_mask`): latent_concat; "v2 (replace)" marks the conditioning with
    `guiding_frame_index` and writes the image latent into frame 0 of its LATENT (with a
    `noise_mask`): token_replace. Its "custom" (`ref_latent`, HunyuanCustom) has no counterpart."""
    extras = {}
    for entry in positive if isinstance(positive, (list, tuple)) else ():
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict):
            extras.update(entry[1])
    concat = extras.get("concat_latent_image")
    if isinstance(concat, torch.Tensor) and concat.ndim == 5:
        return ImageConditioning(concat[:, :, :1].float().cpu(), "latent_concat", stability, *_pixel_size(concat),
                                 ("from ComfyUI's HunyuanImageToVideo (v1 concat)",))
    if "guiding_frame_index" in extras:
        samples = None if not isinstance(latent, dict) else latent.get("samples")
        if not isinstance(samples, torch.Tensor) or samples.ndim != 5 or "noise_mask" not in latent:
            raise InvalidInputError(
                "latent: HunyuanImageToVideo 'v2 (replace)' puts the image in its LATENT output; connect that "
                "latent (it carries the image latent in frame 0 and a noise_mask) with its positive output.")
        return ImageConditioning(samples[:, :, :1].float().cpu(), "token_replace", stability, *_pixel_size(samples),
                                 ("from ComfyUI's HunyuanImageToVideo (v2 replace)",))
    if "ref_latent" in extras:
        raise InvalidInputError(
            "positive: HunyuanImageToVideo 'custom' (ref_latent, for HunyuanCustom) has no counterpart in this "
            "pack; use 'v1 (concat)' or 'v2 (replace)', or this pack's I2V Encode.")
    raise InvalidInputError(
        "positive: this CONDITIONING carries no image (no concat_latent_image or guiding_frame_index); give "
        "HunyuanImageToVideo a start_image, or use this pack's I2V Encode.")


def _pixel_size(latent: torch.Tensor) -> tuple[int, int]:
    """(width, height) in pixels of a latent (the VAE's 8x in space)."""
    return int(latent.shape[-1]) * 8, int(latent.shape[-2]) * 8
