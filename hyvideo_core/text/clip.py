"""The CLIP-L tower: 77 tokens, no template, `pooler_output` (SPEC.md 4.3).

`pooler_output` is the final-layer-normed hidden state at the first EOS token, without the
text projection; transformers' CLIPTextModel computes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from .tokens import TokenBatch, kept_prompt_tokens, pad_batch, text_ids

CLIP_MAX_LENGTH = 77


@dataclass(frozen=True)
class ClipOutput:
    pooled: torch.Tensor  # [B, hidden] (768 for CLIP-L)
    prompt_tokens: tuple[int, ...]
    dropped_tokens: tuple[int, ...]


class ClipTower:
    def __init__(self, model: nn.Module, tokenizer, source: str = "<clip>",
                 max_length: int = CLIP_MAX_LENGTH):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self.max_length = max_length
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_id = self.eos_id if pad is None else pad

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, prompts: Sequence[str]) -> TokenBatch:
        room = self.max_length - 2  # BOS and EOS always stay
        sequences, counts, dropped = [], [], []
        for ids in text_ids(self.tokenizer, list(prompts)):
            counts.append(len(ids))
            dropped.append(len(ids) - kept_prompt_tokens(0, len(ids), room))
            sequences.append([self.bos_id] + ids[:room] + [self.eos_id])
        input_ids, mask = pad_batch(sequences, self.max_length, self.pad_id)
        return TokenBatch(input_ids, mask, tuple(counts), tuple(dropped))

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str], device: torch.device) -> ClipOutput:
        batch = self.tokenize(prompts)
        out = self.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
        return ClipOutput(out.pooler_output, batch.prompt_tokens, batch.dropped_tokens)
