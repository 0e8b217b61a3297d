"""`TextEncoder.encode`: prompt (and negative prompt) -> TextEmbeds, in one batch per tower.

Each tower visits the main device only for its forward pass (Llama first, then CLIP, so at
most one of them is there at a time) and the results are kept on the offload device.
Prompts seen before come from the cache.

With a vision tower (HunyuanVideo-I2V, SPEC_NEXT.md 2.6) `encode(..., image=...)` puts the
image's projected patches in place of the template's <image> token (i2v.py); the vision tower
visits the main device before the Llama. The negative prompt gets a black image of the same
size, as the reference's uncond branch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..runtime.placement import Placement
from .clip import ClipTower
from .embeds import EmbedsCache, PromptEmbeds, TextEmbeds
from .i2v import encode_with_image, image_token_id
from .llm import DEFAULT_TEXT_LEN, LlamaTower
from .templates import PromptTemplate, image_template, resolve_template
from .vision import as_pil, black_like, pixels_digest

# The reference TextEncoder.encode's default, and ComfyUI's and the Kijai wrapper's node default;
# the sampler layer passes 4 for token_replace (the current I2V model) and 2 for latent_concat.
DEFAULT_IMAGE_INTERLEAVE = 2

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
    vision_source: str | None = None


class TextEncoder:
    def __init__(self, llm: LlamaTower, clip: ClipTower, device, offload_device, info: EncoderInfo,
                 cache_size: int = 16, vision=None):
        self.llm = llm
        self.clip = clip
        self.vision = vision  # a vision.VisionTower, or None (text only)
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.info = info
        self.cache = EmbedsCache(cache_size)
        fp8 = "Store the Llama in fp8 (llm_storage='fp8_e4m3fn'), or run the text encoder on the CPU, or free the GPU."
        self._placements = {"llm": Placement(llm.model, self.device, self.offload_device, "Llama text encoder", fp8),
                            "clip": Placement(clip.model, self.device, self.offload_device, "CLIP text encoder")}
        if vision is not None:
            self._placements["vision"] = Placement(vision.modules, self.device, self.offload_device,
                                                   "LLaVA vision tower")

    def placement(self, tower: str) -> Placement:
        """Where a tower ('llm', 'clip' or 'vision') lives; it visits the main device only while it encodes."""
        return self._placements[tower]

    def crop_start(self, template: str | PromptTemplate = "video") -> int:
        return self.llm.crop_start(resolve_template(template))

    def encode(self, prompt: str, negative_prompt: str | None = None,
               template: str | PromptTemplate = "video", text_len: int = DEFAULT_TEXT_LEN,
               image=None, image_embed_interleave: int = DEFAULT_IMAGE_INTERLEAVE) -> TextEmbeds:
        """Encode the prompt and, when given, the negative prompt ('' is a valid prompt).

        `template`: 'video' (default), 'image' (the reference's choice for 1 frame) or a custom
        template text containing '{}'. At most `text_len` prompt tokens are kept; the embeds
        record how many were dropped and a warning is logged.

        `image` (HunyuanVideo-I2V; needs a vision tower): a PIL image or a float tensor
        [3, H, W] in 0..1. The template becomes its I2V version ('video' -> 'video-i2v'), the
        embeds are [every `image_embed_interleave`-th image token || text_len - 4 text tokens]
        with `image_tokens` set, and the negative prompt is encoded with a black image.
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
        pixels = self._image_pixels(image, tmpl, image_embed_interleave, roles)
        if pixels is not None:
            tmpl = image_template(tmpl)
        keys = {role: (text, tmpl.text, text_len) for role, text in texts.items()}
        if pixels is not None:
            keys = {role: key + (pixels_digest(pixels[role]), image_embed_interleave) for role, key in keys.items()}
        found = {role: self.cache.get(key) for role, key in keys.items()}
        todo = list(dict.fromkeys(keys[r] for r, e in found.items() if e is None))
        if todo:
            first = {key: role for role, key in reversed(list(keys.items()))}
            batch_texts = [texts[first[key]] for key in todo]
            batch_pixels = None if pixels is None else torch.stack([pixels[first[key]] for key in todo])
            fresh = dict(zip(todo, self._encode_batch(batch_texts, tmpl, text_len, batch_pixels,
                                                      image_embed_interleave)))
            for role, embeds in found.items():
                if embeds is None:
                    found[role] = fresh[keys[role]]
                    self.cache.put(keys[role], found[role])
        notes = tuple(note for role in found if (note := _truncation_note(role, found[role], text_len)))
        for note in notes:
            log.warning("%s", note)
        return TextEmbeds(positive=found["positive"], negative=found.get("negative"), notes=notes)

    def _image_pixels(self, image, tmpl: PromptTemplate, interleave, roles) -> dict | None:
        """Each role's preprocessed image (the negative's is black), or None for text only."""
        if image is None:
            if tmpl.has_image:
                raise InvalidInputError(
                    f"template {tmpl.name!r} holds the image placeholder: pass `image=` (or use 'video').")
            return None
        if self.vision is None:
            raise InvalidInputError(
                "image: this text encoder has no vision tower, so it cannot encode an image (HunyuanVideo-I2V). "
                "Load it with load_text_encoder(..., vision=...) given the llava-llama-3-8b-v1_1-transformers "
                "folder (text_encoder_i2v) or ComfyUI's clip_vision/llava_llama3_vision.safetensors.")
        if isinstance(interleave, bool) or not isinstance(interleave, int) or interleave < 1:
            raise InvalidInputError(
                f"image_embed_interleave: expected a whole number >= 1 (keep every k-th image token: 4 for "
                f"token_replace, 2 for latent_concat, 1 for all), got {interleave!r}.")
        pil = as_pil(image, "image")
        images = [pil] + ([black_like(pil)] if "negative" in roles else [])
        pixels = self.vision.pixel_values(images)
        return dict(zip(roles, pixels))

    def _encode_batch(self, texts: list[str], tmpl: PromptTemplate, text_len: int,
                      pixels: torch.Tensor | None = None, interleave: int = DEFAULT_IMAGE_INTERLEAVE,
                      ) -> list[PromptEmbeds]:
        image_tokens = 0
        if pixels is None:
            with self.placement("llm").visit():
                llm = self.llm.encode(texts, tmpl, self.device, text_len)
                states, mask = llm.states.to(self.offload_device), llm.mask.to(self.offload_device)
        else:
            image_id = image_token_id(self.llm, self.vision.image_token_id)
            with self.placement("vision").visit():
                patches = self.vision.encode(pixels, self.device).to(self.offload_device)
            with self.placement("llm").visit():
                llm = encode_with_image(self.llm, texts, tmpl, patches, image_id, self.device, text_len, interleave)
                states, mask = llm.states.to(self.offload_device), llm.mask.to(self.offload_device)
            image_tokens = llm.image_tokens
        with self.placement("clip").visit():
            clip = self.clip.encode(texts, self.device)
            pooled = clip.pooled.to(self.offload_device)
        return [PromptEmbeds(states[i:i + 1].clone(), mask[i:i + 1].clone(), pooled[i:i + 1].clone(),
                             prompt=text, template=tmpl.name, prompt_tokens=llm.prompt_tokens[i],
                             dropped_tokens=llm.dropped_tokens[i], clip_dropped_tokens=clip.dropped_tokens[i],
                             image_tokens=image_tokens)
                for i, text in enumerate(texts)]


def _truncation_note(role: str, embeds: PromptEmbeds, text_len: int) -> str | None:
    parts = []
    if embeds.dropped_tokens:
        parts.append(f"the Llama encoder keeps {text_len} of its {embeds.prompt_tokens} tokens and "
                     f"dropped the last {embeds.dropped_tokens}")
    if embeds.clip_dropped_tokens:
        parts.append(f"CLIP (77-token limit) dropped its last {embeds.clip_dropped_tokens} tokens")
    return f"{role} prompt is too long: " + "; ".join(parts) + "." if parts else None
