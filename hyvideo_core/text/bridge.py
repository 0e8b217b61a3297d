"""ComfyUI's native HunyuanVideo CONDITIONING <-> our embeds.

ComfyUI's own text encoder (DualCLIPLoader type "hunyuan_video", then CLIP Text Encode)
produces `[[cond, extras]]` with
- `cond`: [B, L, 4096] Llama hidden states (layer -3, template cropped) holding only the
  prompt tokens and the closing <|eot_id|> (no padding, L varies with the prompt);
- `extras["pooled_output"]`: [B, 768] CLIP-L pooled output;
- `extras["attention_mask"]`: [B, L], present only when some position is masked (ComfyUI
  drops an all-ones mask);
- other keys added by other nodes (e.g. "guidance" from FluxGuidance), which are sampler
  settings, not text, and are not carried over.
We pad to `text_len` with a mask, the shape our encoder produces (padding is masked out, so
the DiT output at the valid positions is unchanged).
"""
from __future__ import annotations

import logging

import torch

from ..errors import InvalidInputError
from .embeds import PromptEmbeds, TextEmbeds
from .llm import DEFAULT_TEXT_LEN

log = logging.getLogger(__name__)

TEXT_KEYS = ("pooled_output", "attention_mask")


def conditioning_to_embeds(positive, negative=None, text_len: int = DEFAULT_TEXT_LEN,
                           text_dim: int | None = 4096) -> TextEmbeds:
    """Native CONDITIONING (positive and optional negative) -> TextEmbeds padded to text_len."""
    pos = conditioning_to_prompt_embeds(positive, "positive", text_len, text_dim)
    neg = None if negative is None else conditioning_to_prompt_embeds(negative, "negative", text_len, text_dim)
    notes = tuple(n for n in (_note(pos, "positive", text_len), neg and _note(neg, "negative", text_len)) if n)
    return TextEmbeds(positive=pos, negative=neg, notes=notes)


def conditioning_to_prompt_embeds(conditioning, role: str = "positive", text_len: int = DEFAULT_TEXT_LEN,
                                  text_dim: int | None = 4096) -> PromptEmbeds:
    cond, extras = _single_entry(conditioning, role)
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3:
        raise InvalidInputError(
            f"{role} CONDITIONING: expected a [B, tokens, 4096] tensor, got "
            f"{list(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__}.")
    batch, length, dim = cond.shape
    if text_dim is not None and dim != text_dim:
        raise InvalidInputError(
            f"{role} CONDITIONING: tokens have {dim} features, HunyuanVideo's Llama gives {text_dim}. "
            "It was made by another model's text encoder; use DualCLIPLoader with type hunyuan_video.")
    pooled = extras.get("pooled_output")
    if not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or pooled.shape[0] != batch:
        raise InvalidInputError(
            f"{role} CONDITIONING: no usable 'pooled_output' [B, 768] (found "
            f"{_describe(pooled)}); HunyuanVideo needs CLIP-L's pooled output. Encode with "
            "DualCLIPLoader type hunyuan_video (clip_l + llava_llama3).")
    mask = _mask(extras.get("attention_mask"), batch, length, role)
    ignored = sorted(k for k in extras if k not in TEXT_KEYS)
    if ignored:
        log.warning("%s CONDITIONING: keys %s are not text and are not carried over (set guidance "
                    "and similar options on the sampler).", role, ignored)
    dropped = int(mask[:, text_len:].sum(dim=1).max()) if length > text_len else 0
    states, mask = _fit(cond, mask, text_len)
    # prompt_tokens stays unknown: the native tokens include the closing <|eot_id|>.
    return PromptEmbeds(states, mask, pooled.clone(), template="native", dropped_tokens=dropped)


def embeds_to_conditioning(embeds: PromptEmbeds) -> list:
    """Our embeds -> native CONDITIONING, trimmed to the valid tokens as ComfyUI makes it."""
    n = int(embeds.text_mask.sum(dim=1).max())
    extras = {"pooled_output": embeds.pooled}
    mask = embeds.text_mask[:, :n]
    if not bool(mask.bool().all()):
        extras["attention_mask"] = mask
    return [[embeds.text_states[:, :n], extras]]


def _single_entry(conditioning, role: str):
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InvalidInputError(f"{role} CONDITIONING: expected a non-empty list of [tensor, dict], "
                                f"got {type(conditioning).__name__}.")
    if len(conditioning) > 1:
        raise InvalidInputError(
            f"{role} CONDITIONING: holds {len(conditioning)} entries (e.g. from Conditioning Combine "
            "or Concat); this sampler takes one prompt per input. Use a single CLIP Text Encode.")
    entry = conditioning[0]
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], dict):
        raise InvalidInputError(f"{role} CONDITIONING: the entry is not a [tensor, dict] pair.")
    return entry[0], entry[1]


def _mask(mask, batch: int, length: int, role: str) -> torch.Tensor:
    if mask is None:
        return torch.ones(batch, length, dtype=torch.int64)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, length):
        raise InvalidInputError(f"{role} CONDITIONING: attention_mask has shape {_describe(mask)}, "
                                f"expected [{batch}, {length}] like the cond tensor.")
    return (mask.detach().cpu() > 0).to(torch.int64)


def _fit(cond: torch.Tensor, mask: torch.Tensor, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, length, dim = cond.shape
    keep = min(length, text_len)
    states = cond.new_zeros(batch, text_len, dim)
    states[:, :keep] = cond[:, :keep]
    padded = torch.zeros(batch, text_len, dtype=torch.int64)
    padded[:, :keep] = mask[:, :keep]
    return states, padded.to(cond.device)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    return "nothing" if value is None else type(value).__name__


def _note(embeds: PromptEmbeds, role: str, text_len: int) -> str | None:
    if not embeds.dropped_tokens:
        return None
    note = (f"{role} CONDITIONING is longer than the {text_len} tokens the reference keeps: the last "
            f"{embeds.dropped_tokens} tokens were dropped.")
    log.warning("%s", note)
    return note
