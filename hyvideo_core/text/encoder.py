"""`TextEncoder.encode`: prompt (and negative prompt) -> TextEmbeds, in one batch per tower.

Each tower visits the main device only for its forward pass (Llama first, then CLIP, so at
most one of them is there at a time) and the results are kept on the offload device.
Prompts seen before come from the cache.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..runtime.placement import Placement
from .clip import ClipTower
from .embeds import EmbedsCache, PromptEmbeds, TextEmbeds
from .llm import DEFAULT_TEXT_LEN, LlamaTower
from .templates import PromptTemplate, resolve_template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderInfo:
    llm_source: str
    clip_source: str
    llm_tokenizer: str
    clip_tokenizer: str
    dtype: torch.dtype
    llm_storage: str
    device: str
    offload_device: str


class TextEncoder:
    def __init__(self, llm: LlamaTower, clip: ClipTower, device, offload_device, info: EncoderInfo,
                 cache_size: int = 16):
        self.llm = llm
        self.clip = clip
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.info = info
        self.cache = EmbedsCache(cache_size)
        fp8 = "Store the Llama in fp8 (llm_storage='fp8_e4m3fn'), or run the text encoder on the CPU, or free the GPU."
        self._placements = {"llm": Placement(llm.model, self.device, self.offload_device, "Llama text encoder", fp8),
                            "clip": Placement(clip.model, self.device, self.offload_device, "CLIP text encoder")}

    def placement(self, tower: str) -> Placement:
        """Where a tower ('llm' or 'clip') lives; it visits the main device only while it encodes."""
        return self._placements[tower]

    def crop_start(self, template: str | PromptTemplate = "video") -> int:
        return self.llm.crop_start(resolve_template(template))

    def encode(self, prompt: str, negative_prompt: str | None = None,
               template: str | PromptTemplate = "video", text_len: int = DEFAULT_TEXT_LEN) -> TextEmbeds:
        """Encode the prompt and, when given, the negative prompt ('' is a valid prompt).

        `template`: 'video' (default), 'image' (the reference's choice for 1 frame) or a custom
        template text containing '{}'. At most `text_len` prompt tokens are kept; the embeds
        record how many were dropped and a warning is logged.
        """
        tmpl = resolve_template(template)
        if not isinstance(text_len, int) or text_len < 1:
            raise InvalidInputError(f"text_len: expected a positive integer, got {text_len!r}.")
        roles = {"positive": prompt}
        if negative_prompt is not None:
            roles["negative"] = negative_prompt
        for role, text in roles.items():
            if not isinstance(text, str):
                raise InvalidInputError(f"{role} prompt: expected a string, got {type(text).__name__}.")
        texts = {role: text.strip() for role, text in roles.items()}
        keys = {role: (text, tmpl.text, text_len) for role, text in texts.items()}
        found = {role: self.cache.get(key) for role, key in keys.items()}
        todo = list(dict.fromkeys(texts[r] for r, e in found.items() if e is None))
        if todo:
            fresh = dict(zip(todo, self._encode_batch(todo, tmpl, text_len)))
            for role, embeds in found.items():
                if embeds is None:
                    found[role] = fresh[texts[role]]
                    self.cache.put(keys[role], found[role])
        notes = tuple(note for role in found if (note := _truncation_note(role, found[role], text_len)))
        for note in notes:
            log.warning("%s", note)
        return TextEmbeds(positive=found["positive"], negative=found.get("negative"), notes=notes)

    def _encode_batch(self, texts: list[str], tmpl: PromptTemplate, text_len: int) -> list[PromptEmbeds]:
        with self.placement("llm").visit():
            llm = self.llm.encode(texts, tmpl, self.device, text_len)
            states, mask = llm.states.to(self.offload_device), llm.mask.to(self.offload_device)
        with self.placement("clip").visit():
            clip = self.clip.encode(texts, self.device)
            pooled = clip.pooled.to(self.offload_device)
        return [PromptEmbeds(states[i:i + 1].clone(), mask[i:i + 1].clone(), pooled[i:i + 1].clone(),
                             prompt=text, template=tmpl.name, prompt_tokens=llm.prompt_tokens[i],
                             dropped_tokens=llm.dropped_tokens[i], clip_dropped_tokens=clip.dropped_tokens[i])
                for i, text in enumerate(texts)]


def _truncation_note(role: str, embeds: PromptEmbeds, text_len: int) -> str | None:
    parts = []
    if embeds.dropped_tokens:
        parts.append(f"the Llama encoder keeps {text_len} of its {embeds.prompt_tokens} tokens and "
                     f"dropped the last {embeds.dropped_tokens}")
    if embeds.clip_dropped_tokens:
        parts.append(f"CLIP (77-token limit) dropped its last {embeds.clip_dropped_tokens} tokens")
    return f"{role} prompt is too long: " + "; ".join(parts) + "." if parts else None
