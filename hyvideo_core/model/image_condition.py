"""How the DiT itself conditions on an image: a run option set on the model from outside
(SPEC_NEXT 2.1, 2.3), like `model.rope_options`; never a flag inside the blocks.

    model.image_condition = TokenReplace()      # HunyuanVideo-I2V, 16 channels, for this run
    try:
        ...                                     # the sampling loop's forwards
    finally:
        model.image_condition = ImageCondition()   # the default: changes nothing

The three I2V checkpoints differ as follows:
- latent_concat (33 input channels: noise 16 + image latent 16 + mask 1, no guidance_in) and
  SkyReels-V1 I2V (32 channels: noise + image latent, guidance_in present) condition through their
  input channels only. The loop concatenates them, the DiT runs them as they are, and they need
  no option here.
- token_replace (the current HunyuanVideo-I2V, 16 channels: the T2V file's shapes) modulates the
  image tokens of latent frame 0 (th*tw tokens) with vec0 = time_in(t=0) + vector_in(pooled),
  with no guidance term. This happens in every double and single block: every `*_mod` linear is
  applied to both vectors. Text tokens and the final layer keep the normal vec. The file cannot
  say which mode it wants (same shapes as T2V), so the run chooses it with `TokenReplace()`.
  Keeping latent frame 0 clean (the image latent before every step, only frames 1.. stepped,
  SPEC_NEXT 2.3) is the sampling loop's part (hyvideo_core/conditioning/image.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .blocks import FirstTokens


@dataclass(frozen=True)
class ImageCondition:
    """The default: every image token uses the normal conditioning vector (T2V, latent_concat,
    SkyReels / keyframe)."""

    name: ClassVar[str] = "none"

    def first_tokens(self, model, grid: tuple[int, int, int], pooled: torch.Tensor,
                     dtype: torch.dtype) -> FirstTokens | None:
        """Leading image tokens with their own vector, over the whole sequence (before any
        parallel split); `pooled` is vector_in(CLIP pooled) [B, hidden]."""
        return None


@dataclass(frozen=True)
class TokenReplace(ImageCondition):
    """HunyuanVideo-I2V token_replace: the tokens of latent frame 0 (the first temporal patch,
    grid[1]*grid[2] tokens) use time_in(0) + vector_in(pooled), without guidance."""

    name: ClassVar[str] = "token_replace"

    def first_tokens(self, model, grid, pooled, dtype):
        t0 = torch.zeros(pooled.shape[0], dtype=torch.float32, device=pooled.device)
        return FirstTokens(model.time_in(t0, dtype) + pooled, grid[1] * grid[2])
