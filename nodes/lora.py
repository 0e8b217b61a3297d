"""LoRA select: adds a LoRA (with a strength and optional per-block strengths) to a model handle.

Chain several to stack them. Nothing is merged here: the sampler makes the model carry exactly
the chained LoRAs right before it samples (hyvideo_core.lora.apply_loras / set_strengths), so a
new strength never reloads the model, and branches with different LoRAs stay correct.
"""
from __future__ import annotations

import os

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.lora import BlockStrengths, LoraSpec, load_lora

from .host import host
from .loaders import file_stamp, missing_file_message

BLOCKS_HELP = ("Optional per-block strengths, multiplied with strength: items like 'double:0-9=1 double:10-19=0.5 "
               "single:*=0 other=1' (double blocks 0-19, single blocks 0-39; '*' = the blocks of that kind not "
               "listed; default= every unlisted block; other= the embedders and final layer). Empty: 1 everywhere.")


def parse_blocks(text: str) -> BlockStrengths | None:
    if not isinstance(text, str):
        raise InvalidInputError(f"blocks: expected text such as 'double:0-9=0.5', got {type(text).__name__}.")
    return BlockStrengths.parse(text) if text.strip() else None


class HyVideoLoraSelect:
    DESCRIPTION = ("Adds a LoRA to the model (any format: diffusers/PEFT, kohya/musubi, ComfyUI, diffusion-pipe). "
                   "Chain several. Changing a strength re-weights the loaded model; it is never reloaded.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("HYVIDEO_MODEL", {"tooltip": "The model (from the loader or another LoRA Select)."}),
            "lora_name": (host.filenames("loras"), {"tooltip": "The LoRA file in models/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "LoRA strength (0 disables it, negative inverts it)."}),
            "blocks": ("STRING", {"default": "", "multiline": False, "tooltip": BLOCKS_HELP}),
        }}

    RETURN_TYPES = ("HYVIDEO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA added to its list (applied by the sampler).",)
    FUNCTION = "select"
    CATEGORY = "HunyuanVideo/lora"

    def __init__(self):
        self.file = None   # ((path, mtime, size), LoraFile): the parsed file, kept across strength changes

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name, blocks):
        try:
            parse_blocks(blocks)
        except InvalidInputError as error:
            return f"blocks: {error}"
        return missing_file_message("loras", lora_name)

    @classmethod
    def IS_CHANGED(cls, lora_name, **_):
        return file_stamp("loras", lora_name)

    def select(self, model, lora_name, strength, blocks):
        stamp = file_stamp("loras", lora_name) or host.full_path("loras", lora_name)  # raises naming the folders
        if self.file is None or self.file[0] != stamp:
            self.file = (stamp, load_lora(stamp[0], name=os.path.splitext(os.path.basename(lora_name))[0]))
        lora = self.file[1]
        spec = LoraSpec(lora, strength, parse_blocks(blocks))   # refuses a NaN/inf strength, naming the LoRA
        text = f"{lora.name} ({lora.format}, {len(lora.modules)} modules) x{spec.strength:g}"
        if lora.unmatched:
            text += f"; {len(lora.unmatched)} keys not used (first: {lora.unmatched[0].key}: {lora.unmatched[0].reason})"
        return {"ui": {"text": [text]}, "result": (model.with_lora(spec),)}


NODE_CLASS_MAPPINGS = {"HyVideoLoraSelect": HyVideoLoraSelect}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoLoraSelect": "HunyuanVideo LoRA Select"}
