"""Keyframe encode: first and/or last frame -> the conditioning latent of dashtoon's keyframe LoRA."""
from __future__ import annotations

from dataclasses import replace

from hyvideo_core.conditioning import build_keyframe_conditioning
from hyvideo_core.run import vae_visit

from .host import host


class HyVideoKeyframeEncode:
    DESCRIPTION = ("Encodes a first and/or last frame for keyframe control. The model needs the HunyuanVideo "
                   "keyframe control LoRA (dashtoon) in a LoRA Select; the sampler takes its size from here.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("HYVIDEO_VAE", {"tooltip": "From the HunyuanVideo VAE Loader (with its encoder)."}),
            "width": ("INT", {"default": 960, "min": 16, "max": 4096, "step": 16,
                              "tooltip": "Video width; images are resized by the larger ratio and centre-cropped."}),
            "height": ("INT", {"default": 544, "min": 16, "max": 4096, "step": 16, "tooltip": "Video height."}),
            "frames": ("INT", {"default": 77, "min": 1, "max": 1025, "step": 4,
                               "tooltip": "Frame count (4k+1); the first keyframe is frame 0, the last one the "
                                          "final frame. The LoRA's reference uses 77 (33-97 work well)."}),
            "encode_seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1,
                                    "tooltip": "Seed of the VAE posterior sample (the reference samples it)."}),
            "tiling": (["off", "auto"], {"default": "off",
                                         "tooltip": "off: encode in one pass; auto: tiles from the free memory."}),
        }, "optional": {
            "first_image": ("IMAGE", {"tooltip": "The first frame (one image)."}),
            "last_image": ("IMAGE", {"tooltip": "The last frame (one image)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_KEYFRAMES",)
    RETURN_NAMES = ("keyframes",)
    OUTPUT_TOOLTIPS = ("Keyframe conditioning for the sampler's keyframes input.",)
    FUNCTION = "encode"
    CATEGORY = "HunyuanVideo/conditioning"

    def encode(self, vae, width, height, frames, encode_seed, tiling, first_image=None, last_image=None):
        host.check_interrupt()
        with host.interruptible(), vae_visit(vae.vae, vae.main, vae.offload, host):
            keyframes = build_keyframe_conditioning(vae.vae, first_image, last_image, width, height, frames,
                                                    seed=encode_seed, tiling="auto" if tiling == "auto" else None)
        # Cached between runs: keep it in RAM, not on the GPU (the sampler moves it per run).
        keyframes = replace(keyframes, latent=keyframes.latent.cpu())
        which = " and ".join(n for n, on in (("first", keyframes.has_first), ("last", keyframes.has_last)) if on)
        text = [f"{which} frame for {keyframes.width}x{keyframes.height}x{keyframes.frames}", *keyframes.notes]
        return {"ui": {"text": text}, "result": (keyframes,)}


NODE_CLASS_MAPPINGS = {"HyVideoKeyframeEncode": HyVideoKeyframeEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoKeyframeEncode": "HunyuanVideo Keyframe Encode"}
