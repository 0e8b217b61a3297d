"""The text conditioning the sampler consumes, its safetensors file format, and a prompt cache.

`PromptEmbeds` holds one prompt's (or a batch of one prompt's) LLM states, mask and pooled
CLIP vector; `TextEmbeds` holds the positive one and an optional negative one (true CFG).
The sampler builds the [neg, pos] batch of SPEC.md 4.4 from them.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Hashable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, InvalidInputError

FORMAT_NAME = "hyvideo_text_embeds"
FORMAT_VERSION = "1"
_TENSORS = ("text_states", "text_mask", "pooled")
_ROLES = ("positive", "negative")


@dataclass(frozen=True)
class PromptEmbeds:
    text_states: torch.Tensor  # [B, L, D] LLM hidden states (L = 256 from our encoder)
    text_mask: torch.Tensor    # [B, L] int64, 1 for valid tokens, right-padded
    pooled: torch.Tensor       # [B, 768] CLIP-L pooler_output
    prompt: str | None = None
    template: str | None = None
    prompt_tokens: int | None = None   # LLM tokens of the prompt before truncation
    dropped_tokens: int = 0            # LLM prompt tokens truncation removed
    clip_dropped_tokens: int = 0       # CLIP prompt tokens truncation removed
    # I2V: the first `image_tokens` of text_states are projected image patches (0 = text only).
    image_tokens: int = 0

    def __post_init__(self) -> None:
        states, mask, pooled = self.text_states, self.text_mask, self.pooled
        if states.ndim != 3 or mask.shape != states.shape[:2] or pooled.ndim != 2 \
                or pooled.shape[0] != states.shape[0]:
            raise InvalidInputError(
                f"text embeds: inconsistent shapes: text_states {list(states.shape)} (expected "
                f"[B, L, D]), text_mask {list(mask.shape)} (expected [B, L]), pooled "
                f"{list(pooled.shape)} (expected [B, 768]).")
        if not 0 <= self.image_tokens <= states.shape[1]:
            raise InvalidInputError(
                f"text embeds: image_tokens {self.image_tokens} is outside 0..{states.shape[1]} (the tokens).")

    @property
    def batch_size(self) -> int:
        return self.text_states.shape[0]

    @property
    def valid_tokens(self) -> torch.Tensor:
        return self.text_mask.sum(dim=1)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "PromptEmbeds":
        """Move; `dtype` applies to the float tensors only (the mask stays int64)."""
        return replace(self, text_states=self.text_states.to(device=device, dtype=dtype),
                       text_mask=self.text_mask.to(device=device),
                       pooled=self.pooled.to(device=device, dtype=dtype))

    def info(self) -> dict:
        return {"prompt": self.prompt, "template": self.template, "prompt_tokens": self.prompt_tokens,
                "dropped_tokens": self.dropped_tokens, "clip_dropped_tokens": self.clip_dropped_tokens,
                "image_tokens": self.image_tokens}


@dataclass(frozen=True)
class TextEmbeds:
    positive: PromptEmbeds
    negative: PromptEmbeds | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)  # e.g. truncation messages

    def to(self, device=None, dtype: torch.dtype | None = None) -> "TextEmbeds":
        neg = None if self.negative is None else self.negative.to(device, dtype)
        return replace(self, positive=self.positive.to(device, dtype), negative=neg)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors, info = {}, {}
        for role in _ROLES:
            embeds = getattr(self, role)
            if embeds is None:
                continue
            for name in _TENSORS:
                tensors[f"{role}.{name}"] = getattr(embeds, name).detach().to("cpu").contiguous()
            info[role] = embeds.info()
        metadata = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "prompts": json.dumps(info)}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TextEmbeds":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such embeds file.")
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc}).") from exc
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"{path}: not a text-embeds file saved by this pack (metadata format is "
                f"{metadata.get('format')!r}, expected {FORMAT_NAME!r}).")
        info = json.loads(metadata.get("prompts", "{}"))
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        parts = {role: _read_role(tensors, role, info.get(role, {}), path) for role in _ROLES}
        if parts["positive"] is None:
            raise CheckpointError(f"{path}: has no positive embeds (keys: {sorted(tensors)}).")
        return cls(positive=parts["positive"], negative=parts["negative"])


def _read_role(tensors: dict, role: str, info: dict, path) -> PromptEmbeds | None:
    present = [name for name in _TENSORS if f"{role}.{name}" in tensors]
    if not present:
        return None
    if len(present) != len(_TENSORS):
        missing = [f"{role}.{name}" for name in _TENSORS if name not in present]
        raise CheckpointError(f"{path}: incomplete {role} embeds, missing {missing}.")
    parts = {name: tensors[f"{role}.{name}"] for name in _TENSORS}
    known = {k: info[k] for k in ("prompt", "template", "prompt_tokens", "dropped_tokens",
                                  "clip_dropped_tokens", "image_tokens") if info.get(k) is not None}
    try:
        return PromptEmbeds(**parts, **known)
    except InvalidInputError as exc:
        raise CheckpointError(f"{path}: {role}: {exc}") from exc


class EmbedsCache:
    """Least-recently-used cache of one-prompt embeds, kept on the offload device."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, PromptEmbeds] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> PromptEmbeds | None:
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        self.misses += 1
        return None

    def put(self, key: Hashable, embeds: PromptEmbeds) -> None:
        if self.max_entries <= 0:
            return
        self._entries[key] = embeds
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
