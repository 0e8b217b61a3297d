"""Image to video through the nodes, in the harness with tiny models under the public names:
Vision Tower Loader -> Text Encoder Loader -> I2V Text Encode, Load Image -> I2V Encode -> the
sampler's image_cond; the v1 concat model's 4 dropped frames; bad graphs refused by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness import load_pack
from hyvideo_core.conditioning import ImageConditioning, fit_first_frame
from node_graphs import (I2V_CONCAT_DIT, I2V_DIT, I2V_ENCODE, IMAGE, KEYFRAME_LORA, SAMPLER, VISION, VISION_LOADER,
                         i2v_prompt, i2v_runner, node, sampled, t2v_prompt, ui_text)

DECODE = "6"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cache_dir):
    return i2v_runner(tmp_path_factory.mktemp("i2v"), cache_dir)


def input_image(folders, name: str = "first.png") -> torch.Tensor:
    pixels = np.asarray(Image.open(folders["input"] / name).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels)


def test_an_i2v_graph_starts_the_video_from_the_image(setup):
    runner, folders = setup
    result = runner.run(i2v_prompt(seed=3)).expect_success()
    cond = result.results[I2V_ENCODE][0]
    assert isinstance(cond, ImageConditioning) and (cond.width, cond.height) == (32, 32)
    latent = sampled(result)
    assert latent.shape == (1, 16, 2, 4, 4)
    # token_replace (the 16-channel v2 replace file): latent frame 0 is the image's latent exactly
    torch.testing.assert_close(latent[:, :, :1], cond.latent)
    assert "vision tower llava_llama3_vision.safetensors" in ui_text(result, "2")
    assert "image: 4 tokens (image_interleave 4)" in ui_text(result, "3")   # 16 tiny patches, every 4th
    assert "stability (recommended sampler shift 7)" in ui_text(result, I2V_ENCODE)

    # the first decoded frame is closer to the (fitted) input image than a T2V run's with the same seed
    t2v = runner.run(t2v_prompt(model=I2V_DIT, seed=3)).expect_success()
    target = (fit_first_frame(input_image(folders), 32, 32)[0][0, :, 0].permute(1, 2, 0) + 1) / 2
    i2v_error = (result.results[DECODE][0][0] - target).square().mean()
    t2v_error = (t2v.results[DECODE][0][0] - target).square().mean()
    assert i2v_error < t2v_error
    assert "hyvideo_drop_frames" not in result.results[SAMPLER][0]


def test_the_sampler_takes_the_size_from_the_image_cond_and_says_so(setup):
    runner, _ = setup
    prompt = i2v_prompt()
    prompt[SAMPLER]["inputs"].update(width=64, height=48)
    result = runner.run(prompt).expect_success()
    assert sampled(result).shape[-2:] == (4, 4)
    assert "size 32x32 taken from image_cond" in ui_text(result, SAMPLER)


def test_the_concat_model_drops_the_first_four_decoded_frames(setup):
    runner, _ = setup
    result = runner.run(i2v_prompt(model=I2V_CONCAT_DIT, interleave=2, frames=9)).expect_success()
    samples = result.results[SAMPLER][0]
    assert samples["hyvideo_drop_frames"] == 4 and samples["samples"].shape[2] == 3   # 9 frames = 3 latent
    frames = result.results[DECODE][0]
    assert frames.shape[0] == 9 - 4
    assert "dropped the first 4 decoded frames" in ui_text(result, DECODE)
    assert "ComfyUI's native VAE Decode" in ui_text(result, SAMPLER)


def test_another_aspect_ratio_is_cropped_and_reported(setup):
    runner, _ = setup
    cropped = runner.run(i2v_prompt()).expect_success()           # the 80x48 image into 32x32
    assert "another aspect ratio" in ui_text(cropped, I2V_ENCODE) and "centre-cropped" in ui_text(cropped, I2V_ENCODE)
    same = runner.run(i2v_prompt(width=80, height=48)).expect_success()
    assert "aspect ratio" not in ui_text(same, I2V_ENCODE)
    assert sampled(same).shape[-2:] == (6, 10)


def test_an_i2v_model_without_image_cond_is_a_node_error_naming_the_input(setup):
    runner, _ = setup
    result = runner.run(t2v_prompt(model=I2V_CONCAT_DIT))
    assert result.status == "error" and result.error["node_id"] == SAMPLER
    assert result.error["exception_type"] == "InvalidInputError"
    assert "image_cond" in result.error["exception_message"] and "33" in result.error["exception_message"]


def test_image_cond_with_keyframes_is_refused(setup):
    runner, _ = setup
    prompt = i2v_prompt(loras=[(KEYFRAME_LORA, 1.0)])
    prompt["50"] = node("HyVideoKeyframeEncode", vae=["5", 0], width=32, height=32, frames=5, encode_seed=0,
                        tiling="off", first_image=[IMAGE, 0])
    prompt[SAMPLER]["inputs"]["keyframes"] = ["50", 0]
    result = runner.run(prompt)
    assert result.status == "error" and result.error["node_id"] == SAMPLER
    message = result.error["exception_message"]
    assert "image_cond" in message and "keyframes" in message


def test_a_text_encoder_without_the_vision_tower_is_named(setup):
    runner, _ = setup
    prompt = i2v_prompt()
    del prompt["2"]["inputs"]["vision"], prompt[VISION_LOADER]
    result = runner.run(prompt)
    assert result.status == "error" and result.error["node_id"] == "3"
    assert "Vision Tower Loader" in result.error["exception_message"]


def test_the_vision_loader_lists_clip_vision_files_and_refuses_a_missing_one(setup):
    runner, folders = setup
    cls = load_pack().NODE_CLASS_MAPPINGS["HyVideoVisionLoader"]
    assert VISION in cls.INPUT_TYPES()["required"]["vision_name"][0]
    prompt = i2v_prompt()
    prompt[VISION_LOADER]["inputs"]["vision_name"] = "llava_llama3_vision_missing.safetensors"
    result = runner.run(prompt)
    assert result.status == "invalid"
    assert str(folders["models"] / "clip_vision") in result.node_errors[VISION_LOADER]["errors"][0]["details"]


def test_native_i2v_conditioning_keys_are_reported_not_silently_dropped():
    cls = load_pack().NODE_CLASS_MAPPINGS["HyVideoConditioningToEmbeds"]
    text = {"pooled_output": torch.randn(1, 32)}
    plain = cls().convert([[torch.randn(1, 6, 64), dict(text)]])
    assert not any("image-to-video" in line for line in plain["ui"]["text"])
    native_i2v = [[torch.randn(1, 6, 64), {**text, "concat_latent_image": torch.zeros(1, 16, 2, 4, 4),
                                           "concat_mask": torch.ones(1, 1, 2, 4, 4)}]]
    note = "\n".join(cls().convert(native_i2v)["ui"]["text"])
    assert "concat_latent_image" in note and "concat_mask" in note and "image_cond" in note
