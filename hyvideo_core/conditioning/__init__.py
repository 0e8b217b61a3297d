"""Conditioning beyond text: keyframes (first/last frame) and image-to-video (the first frame)."""
from ..model.config import needs_image
from .image import (I2V_INTERLEAVE, I2V_MODES, I2V_TEXT_TOKENS, ImageConditioning, image_conditioning_from_native,
                    mode_for_channels, recommended_shift, text_interleave)
from .image import fit_image as fit_first_frame
from .keyframes import (KeyframeConditioning, build_keyframe_conditioning, fit_image, keyframe_video,
                        require_keyframe_model, widen_for_keyframes, widen_patch_embed)

__all__ = ["I2V_INTERLEAVE", "I2V_MODES", "I2V_TEXT_TOKENS", "ImageConditioning", "KeyframeConditioning",
           "build_keyframe_conditioning", "fit_first_frame", "image_conditioning_from_native", "fit_image", "keyframe_video",
           "mode_for_channels", "needs_image", "recommended_shift", "require_keyframe_model", "text_interleave",
           "widen_for_keyframes", "widen_patch_embed"]
