"""HunyuanVideo Parallel: the sampler runs one video on several GPUs of this machine.

The node starts a worker group (one process per extra GPU; ComfyUI's process is rank 0 on its own
GPU) and returns the model handle with the group attached; the sampler then samples on every rank
(hyvideo_core/run/worker_group.py). The group stays up across prompts, is replaced when this
node's settings change, and is stopped when ComfyUI unloads the model (it starts again on the next run).
"""
from __future__ import annotations

from dataclasses import replace

from hyvideo_core.run import GroupLayout, ParallelConfig, PersistentGroup, parse_devices

from .host import host


class HyVideoParallel:
    DESCRIPTION = ("Samples one video on several GPUs: sequence parallelism (Ulysses splits the attention heads, "
                   "ring the tokens) and CFG parallel (the positive and negative prompt on different GPUs). Ulysses "
                   "x ring x (2 with CFG parallel) must equal the number of devices. Each extra GPU gets a worker "
                   "process that loads the same model files and LoRAs.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("HYVIDEO_MODEL", {"tooltip": "From the model loader (or LoRA Select); the workers load the "
                                                   "same file, format and LoRAs."}),
            "devices": ("STRING", {"default": "0,1", "tooltip": "GPUs to use, this ComfyUI's GPU first: indices "
                                                                "('0,1') or names ('cuda:0, cuda:1')."}),
            "ulysses_degree": ("INT", {"default": 2, "min": 1, "max": 64, "tooltip": "GPUs that split the attention "
                                       "heads; must divide the model's 24 heads (1, 2, 3, 4, 6, 8, ...)."}),
            "ring_degree": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "GPUs that pass the tokens around "
                                    "a ring (any number; slower than Ulysses on one machine)."}),
            "cfg_parallel": ("BOOLEAN", {"default": False, "tooltip": "With true CFG (cfg scale > 1): the positive "
                                         "and negative prompt on different GPUs (doubles the device count)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model, sampled on all the devices by the sampler.",)
    FUNCTION = "parallel"
    CATEGORY = "HunyuanVideo/speed"

    def __init__(self):
        self.group: PersistentGroup | None = None     # kept across prompts while the settings stay

    def parallel(self, model, devices, ulysses_degree, ring_degree, cfg_parallel):
        layout = GroupLayout(parse_devices(devices), ParallelConfig(ulysses_degree, ring_degree, bool(cfg_parallel)))
        layout.check(heads=model.transformer.config.heads, main=model.main)
        if self.group is None or self.group.layout != layout:
            if self.group is not None:
                self.group.close()
            self.group = PersistentGroup(layout)
        model.loaded.unload_with(self.group)          # ComfyUI unloading the model stops the workers too
        with host.interruptible():
            group = self.group.ensure_started()
        return {"ui": {"text": [f"{layout.describe()}; worker pids {group.pids}"]},
                "result": (replace(model, parallel=self.group),)}


NODE_CLASS_MAPPINGS = {"HyVideoParallel": HyVideoParallel}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoParallel": "HunyuanVideo Parallel"}
