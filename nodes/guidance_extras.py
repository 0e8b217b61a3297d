"""Long-video and guidance extras for the sampler: RIFLEx, CFG-Zero* and Enhance-A-Video.

A separate node (not more sampler widgets, which would shift the widget values of saved
workflows): it only describes the options; the sampler's optional `extras` input merges them
into its sampling options. All are off at their defaults.
"""
from __future__ import annotations

from hyvideo_core.run.choices import DEFAULTS
from hyvideo_core.sampling import SamplingExtras


class HyVideoSamplingExtras:
    DESCRIPTION = ("Extras for the HunyuanVideo Sampler's extras input: RIFLEx (no repeating motion in long "
                   "videos), CFG-Zero* (optimised true-CFG scale and zero-init steps) and Enhance-A-Video "
                   "(stronger cross-frame consistency). Every option is off at its default.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "riflex_index": ("INT", {"default": DEFAULTS.riflex_index, "min": 0, "max": 8,
                                     "tooltip": "RIFLEx: the temporal RoPE frequency replaced so that long videos do "
                                                "not loop. 4 for HunyuanVideo; it applies past 50 latent frames (201 "
                                                "frames or more). 0 = off."}),
            "cfg_zero_star": ("BOOLEAN", {"default": DEFAULTS.cfg_zero_star,
                                          "tooltip": "CFG-Zero*: scales the negative prediction by its optimal "
                                                     "projection before true CFG. Needs true_cfg_scale > 1."}),
            "zero_init_steps": ("INT", {"default": DEFAULTS.zero_init_steps, "min": 0, "max": 10000,
                                        "tooltip": "CFG-Zero* zero-init: the first N steps output zero velocity "
                                                   "(no model call). Its HunyuanVideo demo zeroes 2 of 50 steps. "
                                                   "0 = off."}),
            "enhance_weight": ("FLOAT", {"default": DEFAULTS.enhance_weight, "min": 0.0, "max": 100.0, "step": 0.1,
                                         "tooltip": "Enhance-A-Video: boosts cross-frame attention of the image "
                                                    "tokens; the official demo uses 4. 0 = off. Not with sequence "
                                                    "parallelism."}),
        }}

    RETURN_TYPES = ("HYVIDEO_EXTRAS",)
    RETURN_NAMES = ("extras",)
    OUTPUT_TOOLTIPS = ("For the HunyuanVideo Sampler's extras input.",)
    FUNCTION = "extras"
    CATEGORY = "HunyuanVideo/sampling"

    def extras(self, riflex_index, cfg_zero_star, zero_init_steps, enhance_weight):
        extras = SamplingExtras(riflex_index=int(riflex_index), cfg_zero_star=bool(cfg_zero_star),
                                zero_init_steps=int(zero_init_steps), enhance_weight=float(enhance_weight))
        return (extras.check(),)


NODE_CLASS_MAPPINGS = {"HyVideoSamplingExtras": HyVideoSamplingExtras}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoSamplingExtras": "HunyuanVideo Sampling Extras"}
