"""Memory plan: the planner's predicted peak GPU memory and its breakdown for a run's settings, and
the block swap that would fit a budget. With a model connected, its exact weights are priced."""
from __future__ import annotations

from hyvideo_core.errors import OutOfMemoryError
from hyvideo_core.run import GiB, PlanInputs, RunShape, SwapRequest, budget_bytes, check_budget, check_size, plan_placement
from hyvideo_core.run.choices import DEFAULTS, PLANNED_ATTENTION, PLANNED_FORMATS

from .host import host


class HyVideoMemoryPlan:
    DESCRIPTION = ("Shows the memory planner's estimate of the peak GPU memory of a run (weights, block swap "
                   "slots, activations, VAE decode) and, with -1 swap counts, the least block swapping that fits.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": DEFAULTS.width, "min": 16, "max": 4096, "step": 16, "tooltip": "Video width."}),
            "height": ("INT", {"default": DEFAULTS.height, "min": 16, "max": 4096, "step": 16, "tooltip": "Video height."}),
            "frames": ("INT", {"default": DEFAULTS.frames, "min": 1, "max": 1025, "step": 4, "tooltip": "Frame count (4k+1)."}),
            "weight_format": (list(PLANNED_FORMATS), {"default": "bf16",
                                               "tooltip": "Weight storage (GGUF: its quant type); ignored when a "
                                                          "model is connected (its real weights are counted)."}),
            "attention": (list(PLANNED_ATTENTION), {"default": "sdpa",
                                           "tooltip": "Attention kernel (sdpa_math: the unfused, quadratic path)."}),
            "double_blocks_to_swap": ("INT", {"default": 0, "min": -1, "max": 20,
                                              "tooltip": "Double blocks kept in RAM; -1 = auto (needs the budget)."}),
            "single_blocks_to_swap": ("INT", {"default": 0, "min": -1, "max": 40,
                                              "tooltip": "Single blocks kept in RAM; -1 = auto (needs the budget)."}),
            "true_cfg_scale": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 30.0, "step": 0.1,
                                         "tooltip": "Above 1 the batched true CFG doubles the activations."}),
            "vae_tiling": (["auto", "off"], {"default": "auto",
                                             "tooltip": "auto: 256 px / 64-frame decode tiles; off: one pass."}),
            "vram_budget_gb": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5,
                                         "tooltip": "The memory to fit, in GiB; 0 = the main device's total."}),
        }, "optional": {
            "model": ("HYVIDEO_MODEL", {"tooltip": "A loaded model: its exact weights (fp8, GGUF, LoRAs) are "
                                                   "counted instead of weight_format."}),
            "ulysses_degree": ("INT", {"default": 1, "min": 1, "max": 24,
                                       "tooltip": "Several GPUs: attention heads split over this many GPUs "
                                                  "(divides the 24 heads); the plan is then per GPU."}),
            "ring_degree": ("INT", {"default": 1, "min": 1, "max": 64,
                                    "tooltip": "Several GPUs: K/V passed around a ring of this many GPUs. "
                                               "GPUs = ulysses x ring (x 2 with cfg_parallel)."}),
            "cfg_parallel": ("BOOLEAN", {"default": False,
                                         "tooltip": "Several GPUs: true CFG's cond and uncond halves on "
                                                    "different GPUs (needs true_cfg_scale above 1)."}),
            "context": ("HYVIDEO_CONTEXT", {"tooltip": "Context windows (as on the sampler): the DiT sees one "
                                                       "window at a time, so the sampling plan is for one window."}),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("plan",)
    OUTPUT_TOOLTIPS = ("The plan as text.",)
    OUTPUT_NODE = True
    FUNCTION = "estimate"
    CATEGORY = "HunyuanVideo/memory"

    def estimate(self, width, height, frames, weight_format, attention, double_blocks_to_swap, single_blocks_to_swap,
                 true_cfg_scale, vae_tiling, vram_budget_gb, model=None, ulysses_degree=1, ring_degree=1,
                 cfg_parallel=False, context=None):
        size = check_size(width, height, frames, ("width", "height", "frames"))
        main, _ = host.devices()
        _, total = host.device_memory(main)
        budget = budget_bytes(check_budget(vram_budget_gb, "vram_budget_gb"), main, total or None)
        swap = SwapRequest.counts(double_blocks_to_swap, single_blocks_to_swap)
        sampled_frames = size.frames if context is None else context.planned_frames(size.frames)
        shape = RunShape(size.width, size.height, sampled_frames, cfg_batched=true_cfg_scale > 1)
        tiles = {} if vae_tiling == "auto" else dict(vae_tile_px=None, vae_tile_frames=None)
        if model is not None:
            inputs = model.loaded.plan_inputs(shape).replace(**tiles)
        else:
            inputs = PlanInputs(weight_format=weight_format, width=shape.width, height=shape.height,
                                frames=shape.frames, cfg_batched=shape.cfg_batched, attention=attention, **tiles)
        inputs = inputs.replace(ulysses_degree=ulysses_degree, ring_degree=ring_degree, cfg_parallel=cfg_parallel)
        lines = list(size.adjustments)
        if sampled_frames != size.frames:
            lines.append(f"context windows: planned for one window of {sampled_frames} of the {size.frames} frames")
        try:
            placement = plan_placement(inputs, swap, budget, main)
            result = placement.plan
            lines += [placement.note] if placement.note else []
        except OutOfMemoryError as error:
            result = error.suggestion
            lines.append(str(error))
        if budget is None:
            lines.insert(0, f"{main} has no device memory limit to check against")
        else:
            verdict = "fits" if result.peak <= budget else "does NOT fit"
            card = f" per GPU, each of {inputs.gpus}" if inputs.gpus > 1 else ""
            lines.insert(0, f"{verdict} in {budget / GiB:.1f} GiB ({str(main)}{card})")
        text = "\n".join([*lines, result.describe()])
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"HyVideoMemoryPlan": HyVideoMemoryPlan}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoMemoryPlan": "HunyuanVideo Memory Plan"}
