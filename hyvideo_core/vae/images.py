"""Frames <-> ComfyUI IMAGE: [frames, H, W, 3] float32 in 0..1.

The VAE works on [B, 3, F, H, W] in -1..1. IMAGE has no video axis, so a batch of B videos
becomes B*F images, video after video; going back needs `frames_per_video` for B > 1.
"""
from __future__ import annotations

import logging

import torch

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

TEMPORAL_COMPRESSION = 4


def video_to_images(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, F, H, W] (or [3, F, H, W]) in -1..1 -> IMAGE [B*F, H, W, 3] float32, clamped to 0..1."""
    if video.dim() == 4:
        video = video.unsqueeze(0)
    if video.dim() != 5 or video.shape[1] != 3:
        raise InvalidInputError(
            f"video_to_images: video has shape {list(video.shape)}; expected [B, 3, frames, H, W].")
    b, _, f, h, w = video.shape
    images = torch.empty((b * f, h, w, 3), dtype=torch.float32, device=video.device)
    for i in range(b):  # one video at a time: no full-size float copy of the batch
        images[i * f:(i + 1) * f] = video[i].permute(1, 2, 3, 0)
    return images.mul_(0.5).add_(0.5).clamp_(0.0, 1.0)


def images_to_video(images: torch.Tensor, frames_per_video: int | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """IMAGE [N, H, W, C] (C = 3, or 4 with alpha, which is dropped) -> [B, 3, F, H, W] in -1..1.

    frames_per_video: F; None means one video of all N images."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[-1] not in (3, 4):
        raise InvalidInputError(
            f"images_to_video: images have shape {list(images.shape)}; expected ComfyUI IMAGE "
            "[frames, height, width, 3].")
    if images.shape[-1] == 4:
        log.warning("images_to_video: dropped the alpha channel of RGBA images.")
        images = images[..., :3]
    n = images.shape[0]
    frames = n if frames_per_video is None else int(frames_per_video)
    if frames <= 0 or n % frames:
        raise InvalidInputError(
            f"images_to_video: {n} images cannot be split into videos of {frames_per_video} frames.")
    b = n // frames
    video = torch.empty((b, 3, frames) + tuple(images.shape[1:3]), dtype=dtype, device=images.device)
    for i in range(b):
        video[i] = images[i * frames:(i + 1) * frames].permute(3, 0, 1, 2)
    return video.mul_(2.0).sub_(1.0)


def valid_frame_count(frames: int) -> int:
    """The largest 4k+1 frame count not above `frames` (the VAE encodes 4k+1 frames)."""
    if frames < 1:
        raise InvalidInputError(f"frame count {frames}: at least 1 frame is needed.")
    return (frames - 1) // TEMPORAL_COMPRESSION * TEMPORAL_COMPRESSION + 1


def trim_to_valid_frames(frames: torch.Tensor, dim: int = 2) -> torch.Tensor:
    """Drop trailing frames along `dim` (2 for [B,3,F,H,W], 0 for IMAGE) down to 4k+1, saying so."""
    count = frames.shape[dim]
    keep = valid_frame_count(count)
    if keep != count:
        log.warning("Trimmed %d frames to %d: the VAE encodes 4k+1 frames (the last %d were dropped).",
                    count, keep, count - keep)
    return frames.narrow(dim, 0, keep)
