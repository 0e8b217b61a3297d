"""Text encoding: LLaVA-Llama-3 hidden states + CLIP-L pooled output (SPEC.md section 4).

Public names are imported lazily (transformers is heavy and ComfyUI imports every pack at
start-up).
"""
from __future__ import annotations

from ..lazy_exports import lazy_exports

_PUBLIC = {
    "load_text_encoder": "hyvideo_core.text.loader",
    "TextEncoder": "hyvideo_core.text.encoder",
    "TextEmbeds": "hyvideo_core.text.embeds",
    "PromptEmbeds": "hyvideo_core.text.embeds",
    "EmbedsCache": "hyvideo_core.text.embeds",
    "PromptTemplate": "hyvideo_core.text.templates",
    "VIDEO_TEMPLATE": "hyvideo_core.text.templates",
    "IMAGE_TEMPLATE": "hyvideo_core.text.templates",
    "DEFAULT_NEGATIVE_PROMPT": "hyvideo_core.text.templates",
    "resolve_template": "hyvideo_core.text.templates",
    "template_for_frames": "hyvideo_core.text.templates",
    "conditioning_to_embeds": "hyvideo_core.text.bridge",
    "embeds_to_conditioning": "hyvideo_core.text.bridge",
    "encode_device_bytes": "hyvideo_core.text.memory",
    "load_vision_tower": "hyvideo_core.text.vision_loader",
    "VIDEO_I2V_TEMPLATE": "hyvideo_core.text.templates",
    "IMAGE_I2V_TEMPLATE": "hyvideo_core.text.templates",
    "DEFAULT_NEGATIVE_PROMPT_I2V": "hyvideo_core.text.templates",
    "DEFAULT_IMAGE_INTERLEAVE": "hyvideo_core.text.encoder",
}


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
