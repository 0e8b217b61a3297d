"""Templates render exactly the reference strings; the crop is measured with the tokenizer."""
from __future__ import annotations

import pytest

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.text.templates import (DEFAULT_NEGATIVE_PROMPT, IMAGE_TEMPLATE, REFERENCE_CROP, VIDEO_TEMPLATE,
                                         PromptTemplate, resolve_template, template_for_frames)
from test_text_tiny import load_tokenizer, text_files  # noqa: F401  (fixture)

# SPEC.md 4.2 (Tencent/HunyuanVideo hyvideo/constants.py), written out in one piece.
REFERENCE_VIDEO = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: 1. The "
    "main content and theme of the video.2. The color, shape, size, texture, quantity, text, and spatial "
    "relationships of the objects.3. Actions, events, behaviors temporal relationships, physical movement changes "
    "of the objects.4. background environment, light, style and atmosphere.5. camera angles, movements, and "
    "transitions used in the video:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>")
REFERENCE_IMAGE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the image by detailing the color, shape, size, "
    "texture, quantity, text, spatial relationships of the objects and background:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>")


def test_templates_render_the_reference_strings():
    assert VIDEO_TEMPLATE.text == REFERENCE_VIDEO
    assert IMAGE_TEMPLATE.text == REFERENCE_IMAGE
    prompt = "  A cat walks on the grass, realistic style.\n"
    assert VIDEO_TEMPLATE.render(prompt) == REFERENCE_VIDEO.format(prompt.strip())
    assert IMAGE_TEMPLATE.render(prompt) == REFERENCE_IMAGE.format(prompt.strip())
    assert VIDEO_TEMPLATE.render("") == REFERENCE_VIDEO.format("")
    assert REFERENCE_CROP == {"video": 95, "image": 36}


def test_default_negative_prompt_is_the_reference_one():
    assert DEFAULT_NEGATIVE_PROMPT == ("Aerial view, aerial view, overexposed, low quality, deformation, a poor "
                                       "composition, bad hands, bad teeth, bad eyes, bad limbs, distortion")


def test_choice_of_template():
    assert template_for_frames(1) is IMAGE_TEMPLATE and template_for_frames(129) is VIDEO_TEMPLATE
    assert resolve_template("video") is VIDEO_TEMPLATE and resolve_template("image") is IMAGE_TEMPLATE
    custom = resolve_template("Q: {} A:")
    assert custom.name == "custom" and custom.prefix == "Q: " and custom.suffix == " A:"
    # Braces other than the placeholder are literal, and a prompt may contain braces.
    assert PromptTemplate("json", '{"text": "{}"}').render(" {x} ") == '{"text": "{x}"}'
    for bad in ("no placeholder", "{} and {}", 7):
        with pytest.raises(InvalidInputError, match="template"):
            resolve_template(bad)


def test_crop_is_measured_by_tokenizing_the_prefix(text_files):
    from hyvideo_core.text.llm import LlamaTower
    tok = load_tokenizer(text_files["llama_tokenizer"])
    tower = LlamaTower(text_files["llama"].model, tok, pad_id=tok.pad_token_id)
    for template in (VIDEO_TEMPLATE, IMAGE_TEMPLATE):
        by_hand = tok(template.prefix)["input_ids"]  # BOS via the tokenizer's post-processor
        assert by_hand[0] == tok.bos_token_id
        assert tower.crop_start(template) == len(by_hand)
        batch, crop = tower.tokenize(["a red fox"], template, text_len=8)
        assert crop == len(by_hand)
        assert batch.input_ids[0, :crop].tolist() == by_hand
        assert batch.input_ids.shape == (1, crop + 8)
    assert tower.crop_start(VIDEO_TEMPLATE) > tower.crop_start(IMAGE_TEMPLATE)
