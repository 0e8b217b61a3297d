"""Our DiT as ComfyUI's native MODEL: for KSampler, SamplerCustomAdvanced, context windows, EasyCache.

The MODEL runs the same loaded transformer as this pack's sampler (its fp8 / GGUF storage, block
swap and LoRAs from LoRA Select), with ComfyUI's HunyuanVideo latent format and flow model
sampling; its conditioning is native CONDITIONING (ComfyUI's HunyuanVideo text encoding, or this
pack's embeds through HunyuanVideo Embeds to Conditioning; FluxGuidance sets the embedded
guidance, default 6). ComfyUI's memory manager loads and unloads it (nodes/host/native_model.py).
"""
from __future__ import annotations

from hyvideo_core.run.choices import DEFAULTS

from .host import host


class HyVideoToNativeModel:
    DESCRIPTION = ("Hands the HunyuanVideo model to ComfyUI's native sampling nodes (KSampler, SamplerCustomAdvanced "
                   "with BasicScheduler / ModelSamplingSD3, Context Windows, EasyCache) as a MODEL. Weight format, "
                   "block swap and LoRAs of the connected model stay in force; connect a TeaCache / First Block "
                   "Cache node to use it under the native sampler. Conditioning: native CONDITIONING (e.g. from "
                   "HunyuanVideo Embeds to Conditioning); FluxGuidance sets the embedded guidance (default 6).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("HYVIDEO_MODEL", {"tooltip": "From the model loader (or LoRA Select)."}),
            "shift": ("FLOAT", {"default": DEFAULTS.shift, "min": 0.01, "max": 100.0, "step": 0.1,
                                "tooltip": "Flow shift of the native sampling schedule (official: 7); a later "
                                           "ModelSamplingSD3 node overrides it."}),
        }, "optional": {
            "cache": ("HYVIDEO_CACHE", {"tooltip": "A cache policy (TeaCache, First Block Cache, EasyCache or "
                                                   "MagCache), applied to every native sampling run of this MODEL."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("ComfyUI's MODEL running this pack's HunyuanVideo transformer.",)
    FUNCTION = "convert"
    CATEGORY = "HunyuanVideo/native"

    def convert(self, model, shift, cache=None):
        native = host.native_model(model, shift=shift, cache=cache)
        parts = [f"native MODEL, shift {shift:g}", model.swap.describe()]
        if model.loras:
            parts.append(f"{len(model.loras)} LoRA(s)")
        if cache is not None:
            parts.append(cache.describe())
        return {"ui": {"text": ["; ".join(parts)]}, "result": (native,)}


NODE_CLASS_MAPPINGS = {"HyVideoToNativeModel": HyVideoToNativeModel}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoToNativeModel": "HunyuanVideo To Native MODEL"}
