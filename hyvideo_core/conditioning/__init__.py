"""Conditioning beyond text: keyframes (first/last frame)."""
from .keyframes import (KeyframeConditioning, build_keyframe_conditioning, fit_image, keyframe_video,
                        require_keyframe_model, widen_for_keyframes, widen_patch_embed)

__all__ = ["KeyframeConditioning", "build_keyframe_conditioning", "fit_image", "keyframe_video",
           "require_keyframe_model", "widen_for_keyframes", "widen_patch_embed"]
