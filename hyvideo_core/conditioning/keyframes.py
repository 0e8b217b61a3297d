"""First/last-frame control with dashtoon's HunyuanVideo keyframe LoRA (SPEC 7).

- Widening: the LoRA's patch-embed A takes 32 input channels ([noisy latent 16 ; conditioning
  16]); the model's Conv3d is widened to that count with its weights in channels 0-15 and zeros
  elsewhere, so with a zero conditioning the model computes exactly what it did before (SPEC 7.2).
  The LoRA's shapes decide the width, never its file name.
- Conditioning: an F-frame video with keyframe 1 at frame 0, keyframe 2 at frame F-1 and black
  (-1) in between, each image resized by the larger ratio and centre-cropped to the generation
  size, VAE-encoded with a seeded sample (a raw latent; the sampler scales it into the model's
  space and concatenates it after the noisy latent every step).
  Latent frame 0 then holds keyframe 1 and the last latent frame the last 4 pixel frames. The
  sampler concatenates it after the noisy latent on the channel axis at every step (SPEC 7.1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..model.config import VARIANTS
from ..sampling.noise import plan_latent

KEYFRAME_LORA = "the HunyuanVideo keyframe control LoRA (dashtoon)"


# -- the model side ------------------------------------------------------------------------------
def widen_patch_embed(model: nn.Module, channels: int) -> tuple[int, int]:
    """Give the patch embed `channels` inputs: old weights in the first ones, zeros after."""
    layer = model.img_in.proj
    before = layer.weight.shape[1]
    if channels == before:
        return before, channels
    if channels < before:
        raise InvalidInputError(
            f"patch embed: cannot narrow from {before} to {channels} input channels.")
    if layer.codec is not None:
        raise InvalidInputError(
            f"patch embed: stored as {type(layer.codec).__name__}; widening needs a plain weight. Keep the "
            "patch embed (img_in) in full precision.")
    old = layer.weight
    wide = torch.zeros(old.shape[0], channels, *old.shape[2:], dtype=old.dtype, device=old.device)
    wide[:, :before] = old
    layer._parameters["weight"] = nn.Parameter(wide, requires_grad=False)
    layer.in_channels = channels
    model.config = model.config.replace(
        in_channels=channels, variant=VARIANTS.get(channels, f"unknown ({channels} input channels)"))
    return before, channels


def widen_for_keyframes(model: nn.Module, lora) -> tuple[int, int]:
    """Widen the patch embed to what `lora`'s patch-embed LoRA takes. `apply_loras` does this by
    itself (and undoes it on removal); call this only to widen without applying the LoRA."""
    channels = lora.patch_embed_channels
    if channels is None:
        raise InvalidInputError(
            f"LoRA {lora.name}: has no patch-embed (img_in.proj / x_embedder.proj) LoRA, so it does not "
            f"widen the model's input; it is not {KEYFRAME_LORA}.")
    have, plain = model.config.in_channels, model.config.out_channels
    if channels == have:
        return have, have
    if have != plain:
        raise InvalidInputError(
            f"LoRA {lora.name}: its patch-embed LoRA takes {channels} input channels, but this model already takes "
            f"{have} (variant {model.config.variant}); it can only be widened from {plain}.")
    if getattr(model, "lora_state", None) is not None:
        raise InvalidInputError(
            "widen_for_keyframes: LoRAs are applied to this model; apply the keyframe LoRA with apply_loras "
            "(it widens the patch embed itself) or remove the LoRAs first.")
    return widen_patch_embed(model, channels)


def require_keyframe_model(model: nn.Module, channels: int = 16) -> None:
    """Fail clearly unless the model takes `channels` conditioning channels after the latent."""
    c = model.config
    extra = c.in_channels - c.out_channels
    if extra == 0:
        raise InvalidInputError(
            f"Keyframe conditioning needs {KEYFRAME_LORA} applied to the model: its patch-embed LoRA widens the "
            f"input from {c.in_channels} to {c.out_channels + channels} channels. Load it with the LoRA loader "
            "(apply_loras) before sampling, or sample without keyframes.")
    if extra != channels:
        raise InvalidInputError(
            f"Keyframe conditioning has {channels} channels but this model takes {extra} extra input channels "
            f"(variant {c.variant}); it is not a keyframe model.")


# -- the conditioning --------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyframeConditioning:
    """The encoded keyframe video: what `sampling.sample(keyframe_latent=...)` takes."""

    latent: torch.Tensor              # [1, 16, (F-1)/4+1, H/8, W/8], raw (ComfyUI LATENT convention)
    width: int
    height: int
    frames: int
    has_first: bool
    has_last: bool
    notes: tuple[str, ...] = field(default=())

    def check(self, model: nn.Module) -> None:
        require_keyframe_model(model, self.latent.shape[1])


def build_keyframe_conditioning(vae, first_image: torch.Tensor | None, last_image: torch.Tensor | None,
                                width: int, height: int, frames: int, seed: int = 0,
                                tiling=None) -> KeyframeConditioning:
    """Encode keyframes (ComfyUI IMAGE [1,H,W,3] or [H,W,3], 0..1; either may be None) for a
    width x height x frames generation. Sizes snap as the sampler snaps them. `tiling` is passed
    to `vae.encode` (None: one pass; a TileSpec or "auto" for large videos)."""
    plan = plan_latent(width, height, frames)
    video = keyframe_video(first_image, last_image, plan.width, plan.height, plan.frames)
    raw = encode_sample(vae, video, seed, tiling).float()
    expected = tuple(plan.shape[1:])
    if tuple(raw.shape[1:]) != expected:
        raise InvalidInputError(
            f"keyframe conditioning: the VAE returned a latent {list(raw.shape)}, expected [1, "
            f"{', '.join(map(str, expected))}]; is this the HunyuanVideo VAE?")
    return KeyframeConditioning(raw, plan.width, plan.height, plan.frames,
                                first_image is not None, last_image is not None, plan.adjustments)


def keyframe_video(first_image: torch.Tensor | None, last_image: torch.Tensor | None,
                   width: int, height: int, frames: int) -> torch.Tensor:
    """[1, 3, frames, height, width] in -1..1: keyframes at frame 0 and frames-1, black between."""
    if first_image is None and last_image is None:
        raise InvalidInputError("keyframes: give a first frame, a last frame, or both.")
    if frames < 2 and first_image is not None and last_image is not None:
        raise InvalidInputError(f"keyframes: frames={frames}; a first and a last frame need at least 2 (use 4k+1, e.g. 33).")
    video = torch.full((1, 3, frames, height, width), -1.0)
    if first_image is not None:
        video[0, :, 0] = fit_image(first_image, width, height, "first_image") * 2 - 1
    if last_image is not None:
        video[0, :, frames - 1] = fit_image(last_image, width, height, "last_image") * 2 - 1
    return video


def fit_image(image: torch.Tensor, width: int, height: int, name: str = "image") -> torch.Tensor:
    """[3, height, width] in 0..1: resized by max(width/w, height/h) (rounded to the nearest
    pixel), then centre-cropped, as the keyframe LoRA's training data was prepared (SPEC 7.1).
    The reference resizes with PIL LANCZOS (up) / cv2 INTER_AREA (down); torch's bicubic and
    antialiased bilinear are close and add no dependency."""
    chw = _as_chw(image, name)
    h, w = chw.shape[1:]
    scale = max(width / w, height / h)
    new_w, new_h = max(width, int(w * scale + 0.5)), max(height, int(h * scale + 0.5))
    if (new_w, new_h) != (w, h):
        batch = chw.unsqueeze(0)
        if scale > 1:
            batch = F.interpolate(batch, size=(new_h, new_w), mode="bicubic", align_corners=False)
        else:
            batch = F.interpolate(batch, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        chw = batch[0].clamp(0.0, 1.0)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return chw[:, top: top + height, left: left + width]


def _as_chw(image: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise InvalidInputError(f"{name}: expected a torch tensor (ComfyUI IMAGE), got {type(image).__name__}.")
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise InvalidInputError(
                f"{name}: an IMAGE batch of {image.shape[0]} was given; a keyframe is one image (pick one).")
        image = image[0]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"{name}: expected [H, W, 3] or [1, H, W, 3] in 0..1, got {list(image.shape)}.")
    if not image.is_floating_point():
        image = image.float() / 255.0
    rgb = image[..., :3] if image.shape[-1] != 1 else image.expand(*image.shape[:2], 3)
    return rgb.permute(2, 0, 1).float().contiguous()


def encode_sample(vae, video: torch.Tensor, seed: int, tiling=None) -> torch.Tensor:
    """Raw latent: a sample of the VAE posterior. The reference draws it unseeded; here the noise
    comes from a CPU generator seeded `seed`, so a seed gives the same latent on any device."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed: must be an integer >= 0, got {seed!r}.")
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        posterior = vae.encode(video.to(device=vae.device, dtype=vae.dtype), tiling=tiling)
        return posterior.sample(generator=generator)
