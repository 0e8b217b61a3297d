"""The LLaVA-Llama-3 tower: template, tokens, the selected hidden layer, crop (SPEC.md 4.2).

The reference runs all 32 decoder layers with `output_hidden_states=True` and keeps
`hidden_states[-3]` (the output of decoder layer 29, no final norm). The tower is built
with only the layers that output needs and an identity in place of the final norm, so its
`last_hidden_state` *is* that tensor: two layers (~0.9 GB in fp16) are never loaded or run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from .templates import PromptTemplate
from .tokens import TokenBatch, kept_prompt_tokens, pad_batch, text_ids

log = logging.getLogger(__name__)

DEFAULT_TEXT_LEN = 256
# --hidden-state-skip-layer 2: hidden_states[-(2 + 1)].
DEFAULT_SKIP_LAYERS = 2


@dataclass(frozen=True)
class LlmOutput:
    states: torch.Tensor  # [B, text_len, D], cropped
    mask: torch.Tensor    # [B, text_len] int64
    prompt_tokens: tuple[int, ...]
    dropped_tokens: tuple[int, ...]


def drop_final_layers(model: nn.Module, skip_layers: int) -> None:
    """Make `last_hidden_state` equal the full model's hidden_states[-(skip_layers + 1)]."""
    if skip_layers:
        del model.layers[len(model.layers) - skip_layers:]
        model.config.num_hidden_layers = len(model.layers)
    model.norm = nn.Identity()  # the reference does not apply the final norm (--apply-final-norm off)


class LlamaTower:
    """A transformers LlamaModel (already truncated, see `drop_final_layers`) and its tokenizer."""

    def __init__(self, model: nn.Module, tokenizer, pad_id: int, source: str = "<llm>"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.bos_id = tokenizer.bos_token_id
        self.source = source
        self._prefix_ids: dict[str, list[int]] = {}
        self._suffix_len: dict[str, int] = {}
        self._warned_context: set[str] = set()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def _start(self) -> list[int]:
        return [] if self.bos_id is None else [self.bos_id]

    def prefix_ids(self, template: PromptTemplate) -> list[int]:
        """BOS + the template prefix: the positions the crop removes."""
        if template.text not in self._prefix_ids:
            prefix, suffix = text_ids(self.tokenizer, [template.prefix, template.suffix])
            self._prefix_ids[template.text] = self._start() + prefix
            self._suffix_len[template.text] = len(suffix)
        return self._prefix_ids[template.text]

    def crop_start(self, template: PromptTemplate) -> int:
        """95 for the video template and 36 for the image template with the Llama-3 tokenizer."""
        return len(self.prefix_ids(template))

    def tokenize(self, prompts: Sequence[str], template: PromptTemplate,
                 text_len: int = DEFAULT_TEXT_LEN) -> tuple[TokenBatch, int]:
        prefix = self.prefix_ids(template)
        crop, suffix_len = len(prefix), self._suffix_len[template.text]
        max_length = crop + text_len
        sequences, counts, dropped = [], [], []
        for ids in text_ids(self.tokenizer, [template.render(p) for p in prompts]):
            full = self._start() + ids
            self._check_prefix_in_context(full, prefix, template)
            n_prompt = max(0, len(full) - crop - suffix_len)
            counts.append(n_prompt)
            dropped.append(n_prompt - kept_prompt_tokens(crop, n_prompt, max_length))
            sequences.append(full[:max_length])
        input_ids, mask = pad_batch(sequences, max_length, self.pad_id)
        return TokenBatch(input_ids, mask, tuple(counts), tuple(dropped)), crop

    def _check_prefix_in_context(self, full: list[int], prefix: list[int], template: PromptTemplate) -> None:
        # A tokenizer whose merges cross the prefix/prompt boundary would make the measured
        # crop cut into (or leave some of) the template; say so rather than crop silently wrong.
        if full[:len(prefix)] != prefix and template.text not in self._warned_context:
            self._warned_context.add(template.text)
            log.warning("%s: the %s template's prefix tokenizes differently when followed by the "
                        "prompt; the crop of %d tokens may be off by a token for this tokenizer.",
                        self.source, template.name, len(prefix))

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str], template: PromptTemplate, device: torch.device,
               text_len: int = DEFAULT_TEXT_LEN) -> LlmOutput:
        batch, crop = self.tokenize(prompts, template, text_len)
        mask = batch.attention_mask.to(device)
        out = self.model(input_ids=batch.input_ids.to(device), attention_mask=mask, use_cache=False)
        states = out.last_hidden_state[:, crop:]
        return LlmOutput(states, mask[:, crop:], batch.prompt_tokens, batch.dropped_tokens)
