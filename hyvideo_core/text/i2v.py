"""Image + text through the Llama tower, HunyuanVideo-I2V's way (SPEC_NEXT.md 2.6).

Token bookkeeping, for a template whose prefix holds one <image> token (position p, 5 with the
Llama-3 tokenizer) and that ends with the assistant header's "\\n\\n" (id 271):
- tokenize as T2V (BOS + template, cut and padded to crop + text_len; crop counts <image> once:
  103 for the video template);
- the <image> token becomes the n projected patch embeddings (n = 576), so every later token
  moves n - 1 places;
- the hidden states are the same layer as T2V (hidden_states[-3]);
- image slice: hidden[p : p + n] (5:581), every k-th kept (`image_embed_interleave`);
- text slice: tokens crop .. last-4 and last .., where `last` is the template's final "\\n\\n";
  the 4 tokens dropped are <|eot_id|> + the assistant header. When truncation cut that
  "\\n\\n" away the reference uses the sequence end as `last` (so the last 4 kept prompt
  tokens go too); we do the same;
- output [image tokens || text tokens], mask all ones on the image part; every row has
  ceil(n / k) + text_len - 4 tokens.
The reference finds `last` as the 4th "\\n\\n" of the row; we find it from the token counts,
which agrees except for a truncated prompt that itself holds "\\n\\n".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import CheckpointError, InvalidInputError
from .llm import DEFAULT_TEXT_LEN, LlamaTower
from .templates import IMAGE_TOKEN, REFERENCE_IMAGE_SLOTS, PromptTemplate
from .tokens import text_ids

DOUBLE_RETURN = "\n\n"
ASSISTANT_TOKENS = REFERENCE_IMAGE_SLOTS.assistant_tokens


@dataclass(frozen=True)
class ImageLlmOutput:
    states: torch.Tensor  # [B, ceil(n / k) + text_len - 4, D]
    mask: torch.Tensor    # [B, same] int64
    prompt_tokens: tuple[int, ...]
    dropped_tokens: tuple[int, ...]
    image_tokens: int     # ceil(n / k), at the front of every row


def image_token_id(tower: LlamaTower, expected: int | None = None) -> int:
    """The tokenizer's id of <image> (128257 for llava-llama-3), checked against the LLaVA config."""
    ids = text_ids(tower.tokenizer, [IMAGE_TOKEN])[0]
    if len(ids) != 1:
        raise CheckpointError(
            f"{tower.source}: its tokenizer ({tower.tokenizer.name_or_path}) has no {IMAGE_TOKEN!r} token "
            f"(it splits it into {len(ids)} tokens), so the image cannot be placed. Use the "
            "llava-llama-3-8b tokenizer (the text_encoder_i2v folder's, or ComfyUI's llama_tokenizer).")
    if expected is not None and ids[0] != expected:
        raise CheckpointError(
            f"{tower.source}: the tokenizer's {IMAGE_TOKEN!r} id is {ids[0]}, the LLaVA config's "
            f"image_token_index is {expected}: the tokenizer belongs to another model.")
    return ids[0]


def double_return_id(tower: LlamaTower) -> int:
    ids = text_ids(tower.tokenizer, [DOUBLE_RETURN])[0]
    if len(ids) != 1:
        raise CheckpointError(
            f"{tower.source}: its tokenizer encodes '\\n\\n' as {len(ids)} tokens; the I2V crop needs it "
            f"as one (id {REFERENCE_IMAGE_SLOTS.double_return_token_id} in Llama-3).")
    return ids[0]


def check_template(tower: LlamaTower, template: PromptTemplate) -> None:
    suffix = text_ids(tower.tokenizer, [template.suffix])[0]
    if len(suffix) < ASSISTANT_TOKENS + 1 or suffix[-1] != double_return_id(tower):
        raise InvalidInputError(
            f"template {template.name!r}: an I2V template must end with the assistant header "
            "'<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n' after the prompt (the crop drops "
            f"the {ASSISTANT_TOKENS} tokens before the last '\\n\\n'); use 'video' or 'video-i2v'.")


@torch.inference_mode()
def encode_with_image(tower: LlamaTower, prompts: Sequence[str], template: PromptTemplate,
                      image_embeds: torch.Tensor, image_id: int, device: torch.device,
                      text_len: int = DEFAULT_TEXT_LEN, interleave: int = 2) -> ImageLlmOutput:
    """`image_embeds`: [B, n, D] projected patches, one image per prompt."""
    check_template(tower, template)
    batch, crop = tower.tokenize(prompts, template, text_len)
    ids, mask = batch.input_ids, batch.attention_mask
    rows, length = ids.shape
    n = image_embeds.shape[1]
    if image_embeds.shape[0] != rows or image_embeds.shape[2] != tower.hidden_size:
        raise InvalidInputError(
            f"image embeds {list(image_embeds.shape)} do not fit {rows} prompts of a Llama of width "
            f"{tower.hidden_size}.")
    suffix_len = len(text_ids(tower.tokenizer, [template.suffix])[0])
    embed = tower.model.get_input_embeddings()
    tokens = embed(ids.to(device))
    image_embeds = image_embeds.to(device=device, dtype=tokens.dtype)
    inputs, masks, lasts, dropped = [], [], [], []
    ones = torch.ones(n, dtype=mask.dtype)
    for r in range(rows):
        where = (ids[r] == image_id).nonzero().flatten().tolist()
        if len(where) != 1 or where[0] >= crop:
            raise InvalidInputError(
                f"prompt {r}: holds the image placeholder {IMAGE_TOKEN!r} itself ({len(where)} found, "
                "the template has the only one); remove it from the prompt.")
        p = where[0]
        inputs.append(torch.cat([tokens[r, :p], image_embeds[r], tokens[r, p + 1:]]))
        masks.append(torch.cat([mask[r, :p], ones, mask[r, p + 1:]]))
        n_prompt = batch.prompt_tokens[r]
        truncated = crop + n_prompt + suffix_len > length
        last = length if truncated else crop + n_prompt + suffix_len - 1
        lasts.append((p, last))
        kept = max(0, min(n_prompt, last - ASSISTANT_TOKENS - crop))
        dropped.append(n_prompt - kept)
    attention = torch.stack(masks).to(device)
    hidden = tower.model(inputs_embeds=torch.stack(inputs), attention_mask=attention, use_cache=False).last_hidden_state
    shift = n - 1
    states, out_masks = [], []
    for r, (p, last) in enumerate(lasts):
        image = hidden[r, p:p + n][::interleave]
        text = torch.cat([hidden[r, crop + shift:last - ASSISTANT_TOKENS + shift], hidden[r, last + shift:]])
        states.append(torch.cat([image, text]))
        text_mask = torch.cat([mask[r, crop:last - ASSISTANT_TOKENS], mask[r, last:]])
        out_masks.append(torch.cat([torch.ones(image.shape[0], dtype=mask.dtype), text_mask]))
    image_tokens = len(range(0, n, interleave))
    return ImageLlmOutput(torch.stack(states), torch.stack(out_masks).to(device), batch.prompt_tokens,
                          tuple(dropped), image_tokens)
