"""Name what a checkpoint looks like from its keys, for errors when it is the wrong file."""
from __future__ import annotations

from typing import Iterable

# (substring any key contains, what such a file is), most specific first.
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("lora_A", "a LoRA (PEFT/diffusers names)"),
    ("lora_down", "a LoRA (kohya names)"),
    ("lora_unet_", "a LoRA (kohya names)"),
    ("txt_in.individual_token_refiner", "a HunyuanVideo transformer (DiT)"),
    ("context_embedder.token_refiner", "a HunyuanVideo transformer in diffusers format"),
    ("decoder.up_blocks", "a VAE"),
    ("decoder.conv_in.conv", "a HunyuanVideo 3D VAE"),
    ("first_stage_model.", "a Stable Diffusion checkpoint (UNet + VAE + CLIP)"),
    ("input_blocks.", "a Stable Diffusion UNet"),
    ("down_blocks.0.attentions", "a diffusers UNet"),
    ("model.layers.0.self_attn", "a Llama-style language model (text encoder)"),
    ("text_model.encoder.layers", "a CLIP text encoder"),
    ("vision_model.encoder", "a CLIP vision encoder"),
    ("encoder.block.0.layer", "a T5 text encoder"),
    ("double_blocks.0.img_attn.qkv", "a Flux-style transformer"),
    ("blocks.0.self_attn.q", "a Wan-style video transformer"),
)


def describe(keys: Iterable[str]) -> str:
    keys = list(keys)
    for marker, what in _SIGNATURES:
        if any(marker in k for k in keys):
            return what
    sample = ", ".join(keys[:4]) or "no tensors"
    return f"an unrecognised checkpoint (first keys: {sample})"
