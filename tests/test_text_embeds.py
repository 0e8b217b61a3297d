"""Embeds save/load, the prompt cache, and the bridge from ComfyUI's native CONDITIONING."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from hyvideo_core.errors import CheckpointError, InvalidInputError
from hyvideo_core.text.bridge import conditioning_to_embeds, embeds_to_conditioning
from hyvideo_core.text.embeds import EmbedsCache, PromptEmbeds, TextEmbeds
from test_text_tiny import by_hand_clip, by_hand_llm, folder_encoder, text_files  # noqa: F401
from hyvideo_core.text.templates import VIDEO_TEMPLATE

PROMPT = "A cat walks on the grass, realistic style."


def test_save_load_round_trip(folder_encoder, tmp_path):
    embeds = folder_encoder.encode(PROMPT, negative_prompt="blurry")
    path = embeds.save(tmp_path / "embeds" / "cat.safetensors")
    loaded = TextEmbeds.load(path)
    for role in ("positive", "negative"):
        a, b = getattr(embeds, role), getattr(loaded, role)
        assert torch.equal(a.text_states, b.text_states) and a.text_states.dtype == b.text_states.dtype
        assert torch.equal(a.text_mask, b.text_mask) and b.text_mask.dtype == torch.int64
        assert torch.equal(a.pooled, b.pooled)
        assert a.info() == b.info()
    assert loaded.positive.prompt == PROMPT and loaded.negative.prompt == "blurry"
    positive_only = TextEmbeds(embeds.positive)
    assert TextEmbeds.load(positive_only.save(tmp_path / "p.safetensors")).negative is None


def test_load_refuses_other_files(tmp_path):
    save_file({"positive.text_states": torch.zeros(1, 4, 8)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a text-embeds file"):
        TextEmbeds.load(tmp_path / "x.safetensors")
    save_file({"positive.text_states": torch.zeros(1, 4, 8)}, str(tmp_path / "y.safetensors"),
              metadata={"format": "hyvideo_text_embeds"})
    with pytest.raises(CheckpointError, match="incomplete positive embeds"):
        TextEmbeds.load(tmp_path / "y.safetensors")
    with pytest.raises(InvalidInputError, match="inconsistent shapes"):
        PromptEmbeds(torch.zeros(1, 4, 8), torch.ones(1, 5, dtype=torch.int64), torch.zeros(1, 3))


def test_cache_is_least_recently_used():
    cache = EmbedsCache(max_entries=2)
    e = PromptEmbeds(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.int64), torch.zeros(1, 4))
    cache.put("a", e)
    cache.put("b", e)
    assert cache.get("a") is e  # a is now the most recent
    cache.put("c", e)
    assert cache.get("b") is None and cache.get("a") is e and cache.get("c") is e and len(cache) == 2


def native_conditioning(text_files, prompt: str, mask_key: bool = False):
    """What ComfyUI's hunyuan_video CLIP Text Encode returns: only the valid tokens (prompt and
    <|eot_id|>) of layer -3 with the template cropped, and the CLIP-L pooled output."""
    states, mask, _ = by_hand_llm(text_files, [prompt], VIDEO_TEMPLATE)
    n = int(mask.sum())
    extras = {"pooled_output": by_hand_clip(text_files, [prompt])}
    if mask_key:  # ComfyUI keeps the mask only when something is masked (batched prompts)
        extras["attention_mask"] = torch.ones(1, n, dtype=torch.int64)
    return [[states[:, :n].clone(), extras]]


def test_bridge_maps_native_conditioning_to_our_embeds(text_files, folder_encoder):
    ours = folder_encoder.encode(PROMPT, negative_prompt="blurry")
    native = conditioning_to_embeds(native_conditioning(text_files, PROMPT),
                                    native_conditioning(text_files, "blurry", mask_key=True), text_dim=64)
    for role in ("positive", "negative"):
        a, b = getattr(ours, role), getattr(native, role)
        assert b.text_states.shape == (1, 256, 64)
        assert torch.equal(a.text_mask, b.text_mask)
        valid = a.text_mask[0].bool()
        torch.testing.assert_close(b.text_states[0, valid], a.text_states[0, valid], rtol=1e-5, atol=1e-5)
        assert torch.equal(b.text_states[0, ~valid], torch.zeros_like(b.text_states[0, ~valid]))
        torch.testing.assert_close(b.pooled, a.pooled, rtol=1e-5, atol=1e-5)


def test_bridge_round_trip_is_identical(folder_encoder):
    ours = folder_encoder.encode(PROMPT).positive
    native = embeds_to_conditioning(ours)
    assert native[0][0].shape[1] == int(ours.text_mask.sum())
    assert "attention_mask" not in native[0][1]
    back = conditioning_to_embeds(native, text_dim=64).positive
    assert torch.equal(back.text_mask, ours.text_mask)
    valid = ours.text_mask[0].bool()
    assert torch.equal(back.text_states[0, valid], ours.text_states[0, valid])
    assert torch.equal(back.pooled, ours.pooled)


def test_bridge_truncates_long_conditioning_and_reports(caplog):
    cond = torch.randn(1, 300, 16)
    with caplog.at_level(logging.WARNING):
        embeds = conditioning_to_embeds([[cond, {"pooled_output": torch.randn(1, 8), "guidance": 6.0}]],
                                        text_dim=16)
    pos = embeds.positive
    assert pos.dropped_tokens == 44 and int(pos.text_mask.sum()) == 256
    assert torch.equal(pos.text_states, cond[:, :256])
    assert "44 tokens were dropped" in caplog.text and "guidance" in caplog.text
    assert embeds.notes


def test_bridge_bad_conditioning():
    pooled = {"pooled_output": torch.randn(1, 768)}
    with pytest.raises(InvalidInputError, match="2 entries"):
        conditioning_to_embeds([[torch.randn(1, 5, 4096), pooled], [torch.randn(1, 5, 4096), pooled]])
    with pytest.raises(InvalidInputError, match="pooled_output"):
        conditioning_to_embeds([[torch.randn(1, 5, 4096), {}]])
    with pytest.raises(InvalidInputError, match="768 features.*hunyuan_video"):
        conditioning_to_embeds([[torch.randn(1, 77, 768), pooled]])
    with pytest.raises(InvalidInputError, match="attention_mask"):
        conditioning_to_embeds([[torch.randn(1, 5, 4096), {**pooled, "attention_mask": torch.ones(1, 6)}]])
    with pytest.raises(InvalidInputError, match="non-empty list"):
        conditioning_to_embeds(torch.randn(1, 5, 4096))
