"""Text encoding: LLaVA-Llama-3 hidden states + CLIP-L pooled output (SPEC.md section 4).

Public names are imported lazily (transformers is heavy and ComfyUI imports every pack at
start-up).
"""
from __future__ import annotations

import importlib

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
}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hyvideo_core.text' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))
