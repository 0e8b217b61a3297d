"""Context windows for long videos: the settings node for the sampler's `context` input.

The node only describes the option (a frozen ContextWindows); the sampler runs the model once per
window inside its one loop, so changing it never reloads weights.
"""
from __future__ import annotations

from hyvideo_core.run import MAX_FRAMES
from hyvideo_core.run.choices import CONTEXT_FUSE_METHODS, CONTEXT_SCHEDULES, DEFAULTS
from hyvideo_core.sampling import ContextWindows

from .loaders import check_inputs


class HyVideoContextWindows:
    DESCRIPTION = ("Context windows for videos longer than the model handles well (129 frames): each step runs "
                   "the model on overlapping windows of context_frames frames and blends them, so memory and time "
                   "grow linearly with the length. Each window uses the positions of a video of its own length. "
                   "No effect when the video fits one window.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_frames": ("INT", {"default": DEFAULTS.context_frames, "min": 1, "max": MAX_FRAMES, "step": 4,
                                       "tooltip": "Window length in pixel frames (4k+1; 129 = 33 latent frames, the "
                                                  "official video length). The memory plan is for one window."}),
            "context_overlap": ("INT", {"default": DEFAULTS.context_overlap, "min": 0, "max": MAX_FRAMES, "step": 4,
                                        "tooltip": "Pixel frames shared by neighbouring windows (32 = 8 latent "
                                                   "frames); must be less than context_frames. More overlap blends "
                                                   "more smoothly and costs more windows."}),
            "schedule": (list(CONTEXT_SCHEDULES), {"default": DEFAULTS.context_schedule,
                                                   "tooltip": "static: the same windows every step (caches work "
                                                              "per window). uniform: windows shift every step "
                                                              "(ComfyUI's standard_uniform). looped: like uniform, "
                                                              "windows may wrap from the end to the start."}),
            "context_stride": ("INT", {"default": DEFAULTS.context_stride, "min": 1, "max": 8,
                                       "tooltip": "uniform/looped only: also run windows of every 2nd, 4th, ... "
                                                  "frame (1 = contiguous windows only)."}),
            "freenoise": ("BOOLEAN", {"default": DEFAULTS.context_freenoise,
                                      "tooltip": "FreeNoise: build the initial noise from shuffled repeats of the "
                                                 "first window's noise, for more consistent long videos."}),
            "fuse": (list(CONTEXT_FUSE_METHODS), {"default": DEFAULTS.context_fuse,
                                                  "tooltip": "How overlapping windows are blended: pyramid (weights "
                                                             "fall towards a window's edges) or flat (plain mean)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_CONTEXT",)
    RETURN_NAMES = ("context",)
    OUTPUT_TOOLTIPS = ("Context-window settings for the sampler's context input.",)
    FUNCTION = "settings"
    CATEGORY = "HunyuanVideo/sampling"

    def settings(self, context_frames, context_overlap, schedule, context_stride, freenoise, fuse):
        check_inputs(schedule=(schedule, CONTEXT_SCHEDULES), fuse=(fuse, CONTEXT_FUSE_METHODS))
        windows = ContextWindows(context_frames, context_overlap, schedule, context_stride, bool(freenoise), fuse)
        return (windows.check(),)   # named errors now, not at the first step


NODE_CLASS_MAPPINGS = {"HyVideoContextWindows": HyVideoContextWindows}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoContextWindows": "HunyuanVideo Context Windows"}
