"""Example V1 nodes used only to test the harness and the host (the pack's real nodes live in
nodes/). They drive the real tiny DiT and the real video writer through the pack's host."""
from __future__ import annotations

import torch

from harness.pack import load_pack
from hyvideo_core import load_transformer
from hyvideo_core.video import numbered_path, write_video

host = load_pack().nodes.host.host
LOADS: list[str] = []  # every file ExampleLoader really read, in order


class ExampleLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (host.filenames("diffusion_models"),
                                           {"tooltip": "DiT file from the diffusion_models folder."})}}
    RETURN_TYPES = ("EXAMPLE_MODEL",)
    FUNCTION = "load"
    CATEGORY = "tests"

    def load(self, unet_name):
        path = host.full_path("diffusion_models", unet_name)
        LOADS.append(unet_name)
        return (load_transformer(path, config="tiny", dtype=torch.float32, attention="sdpa"),)


class ExampleStrength:
    """Stands in for a LoRA: changes how the model is used, never reloads it."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("EXAMPLE_MODEL", {"tooltip": "The model."}),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                                    "tooltip": "Output scale."})}}
    RETURN_TYPES = ("EXAMPLE_MODEL",)
    FUNCTION = "apply"
    CATEGORY = "tests"

    def apply(self, model, strength):
        return ((model, strength),)


class ExampleRender:
    """A few DiT forwards on seeded noise -> frames, with progress, previews and interrupts."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("EXAMPLE_MODEL", {"tooltip": "Model with its strength."}),
            "width": ("INT", {"default": 32, "min": 16, "max": 256, "step": 16, "tooltip": "Width in pixels."}),
            "frames": ("INT", {"default": 5, "min": 1, "max": 33, "step": 4, "tooltip": "4k+1 frames."}),
            "steps": ("INT", {"default": 2, "min": 1, "max": 1000, "tooltip": "Model calls."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Noise seed."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "render"
    CATEGORY = "tests"

    def __init__(self):
        self.calls = 0  # instance state: shows the instance is kept across runs

    def render(self, model, width, frames, steps, seed, unique_id=None):
        self.calls += 1
        (dit, strength) = model
        latent_frames, size = (frames - 1) // 4 + 1, width // 8
        x = torch.randn(1, 16, latent_frames, size, size, generator=torch.Generator().manual_seed(seed))
        text = torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(1))
        bar = host.progress(steps, node_id=unique_id)
        for step in range(steps):
            t = torch.tensor([1000.0 * (1 - step / steps)])
            x = x - dit(x, t, text, torch.ones(1, 4, dtype=torch.long), text[:, 0, :32], torch.tensor([6000.0])) / steps
            bar.update(step + 1, preview_rgb=torch.sigmoid(x[0, :3, 0]).permute(1, 2, 0))
        video = torch.sigmoid(strength * x[0, :3]).permute(1, 2, 3, 0)          # [T, h, w, 3]
        video = video.repeat_interleave(4, 0)[:frames].repeat_interleave(8, 1).repeat_interleave(8, 2)
        return (video.contiguous(),)


class ExampleSaveVideo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"tooltip": "Frames."}),
                             "filename_prefix": ("STRING", {"default": "hyvideo", "tooltip": "File name start."}),
                             "format": (["mp4", "gif"], {"default": "mp4", "tooltip": "Container."})}}
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "tests"

    def save(self, images, filename_prefix, format):
        path = numbered_path(host.output_dir(), filename_prefix, "." + format)
        write_video(images, path, fps=8, should_stop=host.check_interrupt)
        return {"ui": {"videos": [{"filename": path.name, "subfolder": "", "type": "output"}]}}


class ExampleDivide:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "tooltip": "a"}),
                             "b": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "tooltip": "b"})}}
    RETURN_TYPES = ("FLOAT",)
    OUTPUT_NODE = True
    FUNCTION = "divide"
    CATEGORY = "tests"

    @classmethod
    def VALIDATE_INPUTS(cls, b):
        return True if b != 0 else "b must be non-zero"

    @classmethod
    def IS_CHANGED(cls, a, b):
        return float("nan") if a < 0 else a  # negative a: always run again

    def divide(self, a, b):
        return {"ui": {"text": [f"{a / b}"]}, "result": (a / b,)}


NODES = {"ExampleLoader": ExampleLoader, "ExampleStrength": ExampleStrength, "ExampleRender": ExampleRender,
         "ExampleSaveVideo": ExampleSaveVideo, "ExampleDivide": ExampleDivide}


def example_prompt(strength=1.0, seed=3, frames=5, unet="tiny_dit.safetensors", steps=2) -> dict:
    """loader -> strength -> render -> save video, a second sink, and a node that feeds no sink."""
    return {
        "1": {"class_type": "ExampleLoader", "inputs": {"unet_name": unet}},
        "2": {"class_type": "ExampleStrength", "inputs": {"model": ["1", 0], "strength": strength}},
        "3": {"class_type": "ExampleRender", "inputs": {"model": ["2", 0], "width": 32, "frames": frames,
                                                         "steps": steps, "seed": seed}},
        "4": {"class_type": "ExampleSaveVideo", "inputs": {"images": ["3", 0], "filename_prefix": "clip",
                                                            "format": "mp4"}},
        "5": {"class_type": "ExampleDivide", "inputs": {"a": 1.0, "b": 2.0}},
        "9": {"class_type": "ExampleStrength", "inputs": {"model": ["1", 0], "strength": 0.5}},
    }
