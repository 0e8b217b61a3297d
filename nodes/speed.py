"""Speed and memory options: TeaCache, first-block cache, EasyCache, MagCache, block swapping,
torch.compile.

Each node only describes the option (a small frozen settings object); the sampler or the loader
applies it, so changing one of these never reloads weights.
"""
from __future__ import annotations

from hyvideo_core.run import CacheRequest, SwapRequest, check_budget
from hyvideo_core.run.choices import DEFAULTS, MAG_RATIO_TABLES

from .settings import BlockSwapSettings, CompileSettings

CATEGORY = "HunyuanVideo/speed"
CACHE_DEVICES = ["main", "offload"]


class _CacheNode:
    """A cache policy's settings; subclasses name the policy and its default threshold."""

    KIND = ""
    THRESHOLD_MEANS = ""
    RETURN_TYPES = ("HYVIDEO_CACHE",)
    RETURN_NAMES = ("cache",)
    OUTPUT_TOOLTIPS = ("Cache settings for the sampler's cache input.",)
    FUNCTION = "settings"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "threshold": ("FLOAT", {"default": DEFAULTS.cache_thresholds[cls.KIND], "min": 0.0, "max": 1.0, "step": 0.005,
                                    "tooltip": f"{cls.THRESHOLD_MEANS} Higher skips more steps (faster, less "
                                               "faithful); 0 never skips."}),
            "start_step": ("INT", {"default": 0, "min": 0, "max": 10000,
                                   "tooltip": "First step that may be skipped (the first step always runs)."}),
            "end_step": ("INT", {"default": -1, "min": -1, "max": 10000,
                                 "tooltip": "Steps from here on always run; -1 = up to the end (the last step always "
                                            "runs)."}),
            "cache_device": (CACHE_DEVICES, {"default": "main",
                                             "tooltip": "Where the cached residuals live: main (fast) or offload "
                                                        "(RAM, saves GPU memory)."}),
            **cls.option_inputs(),
        }}

    @classmethod
    def option_inputs(cls) -> dict:
        """Widgets of the policy's own knobs (DEFAULTS.cache_options), passed on by keyword."""
        return {}

    def settings(self, threshold, start_step, end_step, cache_device, **options):
        end = None if end_step < 0 else end_step
        request = CacheRequest(self.KIND, threshold, start_step, end, cache_device, tuple(options.items()))
        request.build()  # checks the threshold, the step window and the options now, naming them
        return (request,)


class HyVideoTeaCache(_CacheNode):
    DESCRIPTION = ("TeaCache: skips the transformer blocks on steps where their input barely changed (about 1.6x "
                   "faster at 0.1, 2.1x at 0.15). Conditional and unconditional passes keep separate states.")
    KIND = "teacache"
    THRESHOLD_MEANS = "Accumulated rescaled change below which steps are skipped (official: 0.1 or 0.15)."


class HyVideoFirstBlockCache(_CacheNode):
    DESCRIPTION = ("First-block cache: runs the first block every step and reuses the other blocks' result while "
                   "the first block's output stays close to the last fully computed step.")
    KIND = "first_block"
    THRESHOLD_MEANS = "Relative change of the first block's residual below which the rest is reused."


class HyVideoEasyCache(_CacheNode):
    DESCRIPTION = ("EasyCache: runtime-adaptive; predicts how much the blocks' output would change from how much "
                   "their input changed (rate measured on the last two computed steps) and reuses the cached "
                   "transformation while the accumulated prediction stays under the threshold (published "
                   "HunyuanVideo: 2.2x). Conditional and unconditional passes keep separate states.")
    KIND = "easycache"
    THRESHOLD_MEANS = "Accumulated predicted relative output change below which steps are skipped (official: 0.025)."

    @classmethod
    def option_inputs(cls) -> dict:
        default = DEFAULTS.cache_options[cls.KIND]["warmup"]
        return {"warmup": ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01,
                                     "tooltip": "Fraction of the steps at the start that always run (official: "
                                                "5 of 50 = 0.1)."})}


class HyVideoMagCache(_CacheNode):
    DESCRIPTION = ("MagCache: skips the blocks while HunyuanVideo's calibrated magnitude ratios of the blocks' "
                   "residual say the accumulated error stays under the threshold, at most max_skips steps in a row "
                   "(published: 2.8x at 720p with 0.24 / 6 / 0.2). Conditional and unconditional passes keep "
                   "separate states.")
    KIND = "magcache"
    THRESHOLD_MEANS = "Accumulated magnitude-ratio error allowed before a step must run (official: 0.24, or 0.12)."

    @classmethod
    def option_inputs(cls) -> dict:
        defaults = DEFAULTS.cache_options[cls.KIND]
        return {
            "max_skips": ("INT", {"default": defaults["max_skips"], "min": 1, "max": 100,
                                  "tooltip": "Most steps skipped in a row (K; official 6, or 4 with 0.12)."}),
            "retention": ("FLOAT", {"default": defaults["retention"], "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "Fraction of the steps at the start that always run (official 0.2)."}),
            "ratios": (list(MAG_RATIO_TABLES), {"default": defaults["ratios"],
                                                "tooltip": "Calibrated ratio table (50 steps, resampled to yours): "
                                                           "auto = the one nearest the video's shorter side."}),
        }


class HyVideoBlockSwap:
    DESCRIPTION = ("Keeps transformer blocks in RAM and streams each to the GPU just before it runs (prefetching "
                   "the next one on a side stream). -1 in a count = auto: the memory planner picks the least "
                   "swapping that fits vram_budget_gb for the video being sampled.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "double_blocks_to_swap": ("INT", {"default": -1, "min": -1, "max": 20,
                                              "tooltip": "Double-stream blocks kept in RAM (0-20); -1 = auto."}),
            "single_blocks_to_swap": ("INT", {"default": -1, "min": -1, "max": 40,
                                              "tooltip": "Single-stream blocks kept in RAM (0-40); -1 = auto."}),
            "vram_budget_gb": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5,
                                         "tooltip": "GPU memory auto may plan for, in GiB; 0 = what is free "
                                                    "when sampling starts."}),
            "offload_txt_in": ("BOOLEAN", {"default": False, "tooltip": "Also stream the text refiner (txt_in)."}),
            "offload_img_in": ("BOOLEAN", {"default": False, "tooltip": "Also stream the patch embed (img_in)."}),
            "prefetch": ("BOOLEAN", {"default": True, "tooltip": "Copy the next block while the current one runs "
                                                                 "(two device slots instead of one)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_BLOCK_SWAP",)
    RETURN_NAMES = ("block_swap",)
    OUTPUT_TOOLTIPS = ("Block swap settings for the model loader's block_swap input.",)
    FUNCTION = "settings"
    CATEGORY = CATEGORY

    def settings(self, double_blocks_to_swap, single_blocks_to_swap, vram_budget_gb, offload_txt_in, offload_img_in,
                 prefetch):
        request = SwapRequest.counts(double_blocks_to_swap, single_blocks_to_swap, offload_txt_in=offload_txt_in,
                                     offload_img_in=offload_img_in, prefetch=prefetch)
        settings = BlockSwapSettings(request, check_budget(float(vram_budget_gb), "vram_budget_gb"))
        return {"ui": {"text": [settings.describe()]}, "result": (settings,)}


class HyVideoTorchCompile:
    DESCRIPTION = "torch.compile for every transformer block (needs a working compiler; the first run is slow)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "backend": (["inductor", "cudagraphs", "eager"], {"default": "inductor",
                                                              "tooltip": "torch.compile backend."}),
            "mode": (["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"], {
                "default": "default", "tooltip": "torch.compile mode (inductor)."}),
            "fullgraph": ("BOOLEAN", {"default": False, "tooltip": "Fail instead of splitting a block's graph."}),
            "dynamic": ("BOOLEAN", {"default": False, "tooltip": "Compile for dynamic shapes (fewer recompiles "
                                                                 "when the size changes)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_COMPILE",)
    RETURN_NAMES = ("compile",)
    OUTPUT_TOOLTIPS = ("Compile settings for the model loader's compile input.",)
    FUNCTION = "settings"
    CATEGORY = CATEGORY

    def settings(self, backend, mode, fullgraph, dynamic):
        return (CompileSettings(backend, mode, fullgraph, dynamic),)


NODE_CLASS_MAPPINGS = {
    "HyVideoTeaCache": HyVideoTeaCache,
    "HyVideoFirstBlockCache": HyVideoFirstBlockCache,
    "HyVideoEasyCache": HyVideoEasyCache,
    "HyVideoMagCache": HyVideoMagCache,
    "HyVideoBlockSwap": HyVideoBlockSwap,
    "HyVideoTorchCompile": HyVideoTorchCompile,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HyVideoTeaCache": "HunyuanVideo TeaCache",
    "HyVideoFirstBlockCache": "HunyuanVideo First Block Cache",
    "HyVideoEasyCache": "HunyuanVideo EasyCache",
    "HyVideoMagCache": "HunyuanVideo MagCache",
    "HyVideoBlockSwap": "HunyuanVideo Block Swap",
    "HyVideoTorchCompile": "HunyuanVideo Torch Compile",
}
