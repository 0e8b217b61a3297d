"""What the loop needs from the text encoders, checked against the model before any compute.

The loop accepts any object shaped like `PromptPair` (duck typing; hyvideo_core.text.embeds.TextEmbeds
is one):
- `.positive.text_states` [B or 1, L, text_dim]: LLM hidden states (SPEC 4.2);
- `.positive.text_mask` [B or 1, L] (1 = real token, padding at the end) or None (all real);
- `.positive.pooled` [B or 1, pooled_text_dim]: CLIP pooled output (SPEC 4.3);
- `.negative`: the same three for the negative prompt, or None (needed for true CFG only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError


class PromptLike(Protocol):
    text_states: torch.Tensor
    text_mask: Optional[torch.Tensor]
    pooled: torch.Tensor


class EmbedsLike(Protocol):
    positive: PromptLike
    negative: Optional[PromptLike]


@dataclass
class PromptTensors:
    text_states: torch.Tensor
    text_mask: Optional[torch.Tensor]
    pooled: torch.Tensor


@dataclass
class PromptPair:
    positive: PromptTensors
    negative: Optional[PromptTensors] = None


def check_prompt(prompt, name: str, text_dim: int, pooled_dim: int, batch: int) -> None:
    """Raise InvalidInputError when the prompt tensors do not fit the model or the batch."""
    for attr in ("text_states", "text_mask", "pooled"):
        if not hasattr(prompt, attr):
            raise InvalidInputError(
                f"embeds.{name}: has no `{attr}`; expected an object with text_states, text_mask and pooled.")
    states, mask, pooled = prompt.text_states, prompt.text_mask, prompt.pooled
    if not isinstance(states, torch.Tensor) or states.ndim != 3 or states.shape[-1] != text_dim:
        got = list(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise InvalidInputError(
            f"embeds.{name}.text_states: expected [B, L, {text_dim}] for this model, got {got}; the text encoder "
            "does not match the DiT.")
    if not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or pooled.shape[-1] != pooled_dim:
        got = list(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
        raise InvalidInputError(
            f"embeds.{name}.pooled: expected [B, {pooled_dim}] (CLIP pooled output) for this model, got {got}.")
    if mask is not None and tuple(mask.shape) != tuple(states.shape[:2]):
        raise InvalidInputError(
            f"embeds.{name}.text_mask: expected shape {list(states.shape[:2])} (like states), got {list(mask.shape)}.")
    if mask is not None and not bool(mask.bool().any(1).all()):
        raise InvalidInputError(f"embeds.{name}.text_mask: a prompt has no valid token.")
    for what, n in (("text_states", states.shape[0]), ("pooled", pooled.shape[0])):
        if n not in (1, batch):
            raise InvalidInputError(
                f"embeds.{name}.{what}: batch {n} does not match the latent batch {batch}; give 1 or {batch}.")


def prompt_for_batch(prompt, batch: int, device) -> PromptTensors:
    """The prompt on `device`, expanded to the latent batch, with an explicit mask."""
    states = prompt.text_states.to(device)
    mask = prompt.text_mask
    mask = torch.ones(states.shape[:2], dtype=torch.long, device=device) if mask is None else mask.to(device)
    pooled = prompt.pooled.to(device)
    return PromptTensors(_expand(states, batch), _expand(mask, batch), _expand(pooled, batch))


def join_batches(first: PromptTensors, second: PromptTensors) -> PromptTensors:
    """[first; second] along the batch, padding the shorter text with masked-out zeros."""
    length = max(first.text_states.shape[1], second.text_states.shape[1])

    def pad(p: PromptTensors) -> tuple[torch.Tensor, torch.Tensor]:
        extra = length - p.text_states.shape[1]
        return F.pad(p.text_states, (0, 0, 0, extra)), F.pad(p.text_mask, (0, extra))

    (s1, m1), (s2, m2) = pad(first), pad(second)
    return PromptTensors(torch.cat([s1, s2.to(s1.dtype)]), torch.cat([m1, m2.to(m1.dtype)]),
                         torch.cat([first.pooled, second.pooled.to(first.pooled.dtype)]))


def _expand(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])
