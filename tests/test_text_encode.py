"""Encoding on tiny random towers against a by-hand computation done the reference's way
(see by_hand_llm / by_hand_clip in test_text_tiny.py)."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

from hyvideo_core.text.templates import IMAGE_TEMPLATE, VIDEO_TEMPLATE, PromptTemplate
from test_text_tiny import by_hand_clip, by_hand_llm, folder_encoder, load_tokenizer, text_files  # noqa: F401

PROMPT = "A cat walks on the grass, realistic style."


def count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_selected_layer_crop_and_mask_equal_hand_computation(text_files, folder_encoder):
    embeds = folder_encoder.encode(PROMPT)
    states, mask, crop = by_hand_llm(text_files, [PROMPT], VIDEO_TEMPLATE)
    pos = embeds.positive
    assert folder_encoder.crop_start("video") == crop
    assert pos.text_states.shape == (1, 256, 64) and pos.text_mask.shape == (1, 256)
    assert torch.equal(pos.text_mask, mask)
    assert int(mask.sum()) == pos.prompt_tokens + 1  # prompt + the closing <|eot_id|>
    torch.testing.assert_close(pos.text_states, states, rtol=1e-5, atol=1e-5)
    # The test can tell neighbouring layers (and the final norm) apart.
    for other in (-2, -4, -1):
        wrong, _, _ = by_hand_llm(text_files, [PROMPT], VIDEO_TEMPLATE, layer=other)
        assert (pos.text_states - wrong).abs().max() > 1e-2
    torch.testing.assert_close(pos.pooled, by_hand_clip(text_files, [PROMPT]), rtol=1e-5, atol=1e-5)
    assert pos.pooled.shape == (1, 32)


def test_image_and_custom_templates(text_files, folder_encoder):
    image = folder_encoder.encode(PROMPT, template="image").positive
    states, mask, crop = by_hand_llm(text_files, [PROMPT], IMAGE_TEMPLATE)
    assert crop < folder_encoder.crop_start("video")
    assert torch.equal(image.text_mask, mask)
    torch.testing.assert_close(image.text_states, states, rtol=1e-5, atol=1e-5)

    custom = "<|start_header_id|>user<|end_header_id|>\n\nDescribe: {}<|eot_id|>"
    got = folder_encoder.encode(PROMPT, template=custom).positive
    states, mask, _ = by_hand_llm(text_files, [PROMPT], PromptTemplate("custom", custom))
    assert torch.equal(got.text_mask, mask) and got.template == "custom"
    torch.testing.assert_close(got.text_states, states, rtol=1e-5, atol=1e-5)


def test_positive_and_negative_in_one_batch(text_files, folder_encoder):
    folder_encoder.cache.clear()
    negative = "blurry, low quality"
    calls, handle = count_calls(folder_encoder.llm.model)
    try:
        embeds = folder_encoder.encode(PROMPT, negative_prompt=negative)
    finally:
        handle.remove()
    assert len(calls) == 1  # one Llama forward for both prompts
    states, mask, _ = by_hand_llm(text_files, [PROMPT, negative], VIDEO_TEMPLATE)
    pooled = by_hand_clip(text_files, [PROMPT, negative])
    for row, part in enumerate((embeds.positive, embeds.negative)):
        assert torch.equal(part.text_mask, mask[row:row + 1])
        torch.testing.assert_close(part.text_states, states[row:row + 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(part.pooled, pooled[row:row + 1], rtol=1e-5, atol=1e-5)
    assert embeds.negative.prompt == negative


def test_cache_skips_reencoding(folder_encoder):
    folder_encoder.cache.clear()
    first = folder_encoder.encode("  a red fox  ")
    calls, handle = count_calls(folder_encoder.llm.model)
    try:
        again = folder_encoder.encode("a red fox")  # same prompt after strip()
        other_template = folder_encoder.encode("a red fox", template="image")
    finally:
        handle.remove()
    assert len(calls) == 1  # only the image-template encode ran the model
    assert again.positive is first.positive
    assert not torch.equal(other_template.positive.text_states, first.positive.text_states)


def test_long_prompt_truncated_and_reported(text_files, folder_encoder, caplog):
    tok = load_tokenizer(text_files["llama_tokenizer"])
    words = "cat grass fox dog sunset realistic style walks jumps lazy red green blue"
    prompt = " ".join([words] * 40)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert n_prompt > 300
    with caplog.at_level(logging.WARNING):
        embeds = folder_encoder.encode(prompt)
    pos = embeds.positive
    assert pos.prompt_tokens == n_prompt
    assert pos.dropped_tokens == n_prompt - 256
    assert pos.clip_dropped_tokens > 0
    assert int(pos.text_mask.sum()) == 256  # every position is prompt (the <|eot_id|> was cut too)
    assert any(f"dropped the last {n_prompt - 256}" in note for note in embeds.notes)
    assert f"dropped the last {n_prompt - 256}" in caplog.text
    states, mask, _ = by_hand_llm(text_files, [prompt], VIDEO_TEMPLATE)
    torch.testing.assert_close(pos.text_states, states, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pos.pooled, by_hand_clip(text_files, [prompt]), rtol=1e-5, atol=1e-5)


def test_empty_prompt_is_allowed(text_files, folder_encoder):
    pos = folder_encoder.encode("").positive
    assert pos.prompt_tokens == 0 and pos.dropped_tokens == 0
    assert int(pos.text_mask.sum()) == 1  # only the closing <|eot_id|>
    states, mask, _ = by_hand_llm(text_files, [""], VIDEO_TEMPLATE)
    torch.testing.assert_close(pos.text_states, states, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pos.pooled, by_hand_clip(text_files, [""]), rtol=1e-5, atol=1e-5)


def test_bad_arguments(folder_encoder):
    from hyvideo_core.errors import InvalidInputError
    with pytest.raises(InvalidInputError, match="template"):
        folder_encoder.encode(PROMPT, template="portrait")
    with pytest.raises(InvalidInputError, match="negative prompt"):
        folder_encoder.encode(PROMPT, negative_prompt=3)


def test_bf16_compute(text_files):
    from hyvideo_core.text.loader import load_text_encoder
    enc = load_text_encoder(text_files["llm_folder"], text_files["clip_folder"], dtype=torch.bfloat16, device="cpu")
    pos = enc.encode(PROMPT, text_len=16).positive
    assert pos.text_states.dtype == torch.bfloat16 and pos.pooled.dtype == torch.bfloat16
    # Against the same computation by transformers in bf16 (bf16 itself is ~3% off fp32 here).
    llama_bf16 = copy.deepcopy(text_files["llama"]).to(torch.bfloat16)
    states, _, _ = by_hand_llm(text_files, [PROMPT], VIDEO_TEMPLATE, text_len=16, llama=llama_bf16)
    torch.testing.assert_close(pos.text_states, states, rtol=1e-2, atol=1e-2)
