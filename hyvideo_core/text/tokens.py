"""Token ids for both towers, built by hand so the result does not depend on how a tokenizer's
post-processor or `add_bos_token` setting is configured.

The reference calls `tokenizer(text, max_length=L, padding="max_length", truncation=True)`
with special tokens on. For Llama-3 that is BOS + text ids, cut to L and right-padded; for
CLIP it is BOS + at most L-2 text ids + EOS, right-padded. We tokenize the text without
special tokens and add them ourselves, which gives the same ids and lets us count exactly
how many prompt tokens truncation dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class TokenBatch:
    input_ids: torch.Tensor       # [B, L] int64
    attention_mask: torch.Tensor  # [B, L] int64, 1 for real tokens, right-padded
    prompt_tokens: tuple[int, ...]   # tokens of each user prompt (template excluded)
    dropped_tokens: tuple[int, ...]  # of those, how many truncation removed


def text_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Ids of each text without any special tokens added by the tokenizer itself."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def pad_batch(sequences: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (sequences already at most `length` long) to a [B, length] id tensor and mask."""
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(sequences), length), dtype=torch.int64)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.int64)
        mask[row, :len(seq)] = 1
    return ids, mask


def kept_prompt_tokens(prompt_start: int, prompt_tokens: int, max_length: int) -> int:
    """How many of the prompt's tokens (starting at `prompt_start`) survive a cut at max_length."""
    return max(0, min(prompt_tokens, max_length - prompt_start))
