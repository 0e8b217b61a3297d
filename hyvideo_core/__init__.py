"""hyvideo_core: a host-free PyTorch engine for HunyuanVideo 13B.

The public face is a handful of functions; they are imported lazily so that `import
hyvideo_core` stays cheap (ComfyUI imports every pack at start-up).
"""
from __future__ import annotations

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

_PUBLIC = {
    "load_transformer": "hyvideo_core.weights.loader",
    "load_vae": "hyvideo_core.vae.loader",
    "load_text_encoder": "hyvideo_core.text.loader",
    "sample": "hyvideo_core.sampling",
    "SamplingOptions": "hyvideo_core.sampling",
    "SamplingHooks": "hyvideo_core.sampling",
    "TeaCache": "hyvideo_core.sampling",
    "FirstBlockCache": "hyvideo_core.sampling",
    "load_lora": "hyvideo_core.lora",
    "apply_loras": "hyvideo_core.lora",
    "remove_loras": "hyvideo_core.lora",
    "set_strengths": "hyvideo_core.lora",
    "build_keyframe_conditioning": "hyvideo_core.conditioning",
    "KeyframeConditioning": "hyvideo_core.conditioning",
    "storage_for": "hyvideo_core.weights.storage",
    "BlockSwap": "hyvideo_core.runtime.block_swap",
    "PlanInputs": "hyvideo_core.runtime.planner",
    "plan": "hyvideo_core.runtime.planner",
    "auto_swap": "hyvideo_core.runtime.planner",
    "plan_for_model": "hyvideo_core.runtime.planner",
    "oom_guard": "hyvideo_core.runtime.oom",
    "generate": "hyvideo_core.run.generate",
    "TileSpec": "hyvideo_core.vae.tiling",
    "HunyuanVideoVAE": "hyvideo_core.vae.vae",
    "DiTConfig": "hyvideo_core.model.config",
    "HunyuanVideoTransformer": "hyvideo_core.model.transformer",
    "HyVideoError": "hyvideo_core.errors",
}


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
