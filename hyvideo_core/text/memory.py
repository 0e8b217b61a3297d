"""Device memory of a text encode: the one model of it (what a host must free before encoding).

`TextEncoder.encode` (encoder.py) runs the vision tower (I2V only), the Llama, then CLIP, each
visiting the main device only for its forward pass, so the device holds one tower at a time: the
need is the larger of
(tower weights as stored + that tower's activations for the prompt tokens), plus WORKSPACE.

A tower's activations, per decoder layer at its worst point (transformers' Llama / CLIP layers):
the residual stream and its normalised copy (2·T·D), then either attention (q, rotated q/k,
attention output and projection ~6·T·D, k and v 2·T·kv, and the B·heads·L² scores of the
unfused path) or the MLP (gate activation, up projection and their product, 3·T·I), for T = B·L
tokens; plus the additive B·L² mask, and for fp8-stored weights the dequantisation temporaries of
the largest weight (runtime/activations.py: dequant_workspace, the DiT's rule).
"""
from __future__ import annotations

import torch.nn as nn

from ..runtime.activations import dequant_workspace
from ..runtime.placement import module_bytes
from .llm import DEFAULT_TEXT_LEN
from ..errors import InvalidInputError
from .templates import PromptTemplate, image_template, resolve_template

# cuBLAS workspaces and the caching allocator's block rounding during a forward pass.
WORKSPACE = 256 * 2**20


def tower_activation_bytes(model: nn.Module, batch: int, tokens: int) -> int:
    """Peak activation bytes of one forward pass of a transformers text tower over `batch`
    sequences of `tokens` tokens, in the tower's compute dtype (its input embedding's dtype)."""
    cfg = model.config
    d, i, heads = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    kv = (getattr(cfg, "num_key_value_heads", None) or heads) * head_dim
    element = model.get_input_embeddings().weight.element_size()
    t = batch * tokens
    scores = 2 * batch * heads * tokens * tokens
    attention = 6 * t * d + 2 * t * kv + scores
    mlp = 3 * t * i
    return (2 * t * d + max(attention, mlp) + batch * tokens * tokens) * element + _dequant_bytes(model)


def _dequant_bytes(model: nn.Module) -> int:
    """Temporaries of turning the largest fp8-stored weight into a compute tensor (0 if none)."""
    fp8 = [p.numel() for p in model.parameters() if p.element_size() == 1 and p.is_floating_point()]
    return dequant_workspace(max(fp8), "fp8") if fp8 else 0


def tower_device_bytes(model: nn.Module, batch: int, tokens: int) -> int:
    """What one visit of a tower puts on the device: its weights as stored + its activations."""
    return module_bytes(model) + tower_activation_bytes(model, batch, tokens)


def vision_device_bytes(vision, images: int = 2) -> int:
    """One visit of the LLaVA vision tower: tower + projector weights, the tower's activations over
    `images` images of patches + 1 (CLS) tokens, and the projector's input, hidden and output."""
    tokens = vision.patches + 1
    tower = vision.modules.tower
    element = tower.get_input_embeddings().weight.element_size()
    projector = 3 * images * tokens * max(vision.hidden_size, tower.config.hidden_size) * element
    return module_bytes(vision.modules) + tower_activation_bytes(tower, images, tokens) + projector


def encode_device_bytes(encoder, *, prompts: int = 2, text_len: int = DEFAULT_TEXT_LEN,
                        template: str | PromptTemplate = "video", image: bool | None = None) -> int:
    """Device bytes a `TextEncoder.encode` needs on `encoder.device`: the larger of the towers'
    visits (they visit one at a time) for `prompts` prompts encoded in one batch (2: a prompt and a
    negative prompt), the Llama over its template prefix + `text_len` tokens (it pads to that
    length) and CLIP over its 77, plus WORKSPACE. Counted whether or not the towers are already on
    that device.

    `image` (None = whenever the encoder has a vision tower): an I2V encode, which adds the vision
    tower's visit (one image per prompt) and makes the Llama's sequence longer by the image
    tokens (the I2V template, <image> expanded to the patches)."""
    vision = getattr(encoder, "vision", None)
    image = vision is not None if image is None else image
    if image and vision is None:
        raise InvalidInputError("image: this text encoder has no vision tower; an I2V encode needs one "
                                "(load_text_encoder(..., vision=...)).")
    if image:
        tmpl = image_template(resolve_template(template))
        llm_tokens = encoder.crop_start(tmpl) + text_len + vision.patches - 1
    else:
        llm_tokens = encoder.crop_start(template) + text_len
    visits = [tower_device_bytes(encoder.llm.model, prompts, llm_tokens),
              tower_device_bytes(encoder.clip.model, prompts, encoder.clip.max_length)]
    if image:
        visits.append(vision_device_bytes(vision, prompts))
    return max(visits) + WORKSPACE
