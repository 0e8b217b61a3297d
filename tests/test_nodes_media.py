"""Frames in and out: loading images / videos, VAE encode and decode (tiled), video-to-video,
keyframes, saving mp4 / webm / gif, ComfyUI's native LATENT and CONDITIONING conventions."""
from __future__ import annotations

import pytest
import torch

from hyvideo_core.text.bridge import embeds_to_conditioning
from hyvideo_core.video import read_video
from node_graphs import KEYFRAME_LORA, SAMPLER, node, sampled, t2v_prompt, tiny_runner, ui_text


class NativeEmptyLatent:
    """Stands in for ComfyUI's EmptyHunyuanLatentVideo: zeros of [B, 16, (length-1)//4+1, H/8, W/8]."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 32, "min": 16, "max": 64, "tooltip": "w"}),
                             "length": ("INT", {"default": 5, "min": 1, "max": 33, "tooltip": "frames"})}}
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "tests"

    def make(self, width, length):
        shape = (1, 16, (length - 1) // 4 + 1, width // 8, width // 8)
        return ({"samples": torch.zeros(shape), "noise_mask": torch.ones(shape[2:])},)


class NativeConditioning:
    """Stands in for CLIP Text Encode: native CONDITIONING built from our own embeds."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"embeds": ("HYVIDEO_EMBEDS", {"tooltip": "embeds"})}}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "tests"

    def make(self, embeds):
        return (embeds_to_conditioning(embeds.positive),)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    extra = {"NativeEmptyLatent": NativeEmptyLatent, "NativeConditioning": NativeConditioning}
    return tiny_runner(tmp_path_factory.mktemp("media"), tmp_path_factory.mktemp("tiny_models"), extra_nodes=extra)


def saved_files(result):
    return [item for ui in result.outputs.values() for item in ui.get("images", [])]


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif"])
def test_save_video_writes_each_format_into_a_subfolder_with_a_preview(setup, fmt):
    runner, folders = setup
    prompt = t2v_prompt()
    prompt["7"]["inputs"].update(format=fmt, filename_prefix="clips/run")
    result = runner.run(prompt).expect_success()
    item, = saved_files(result)
    assert result.outputs["7"]["animated"] == (True,) and item["subfolder"] == "clips" and item["type"] == "output"
    clip = read_video(folders["output"] / "clips" / item["filename"])
    assert clip.frame_count == 5 and clip.size == (32, 32)


def test_load_video_encode_and_video_to_video(setup):
    runner, _ = setup
    prompt = t2v_prompt(denoise=0.5, steps=4, width=64)
    prompt["10"] = node("HyVideoLoadVideo", video="clip.mp4", frame_load_cap=0, skip_first_frames=1,
                        select_every_nth=1, resize_width=40, resize_height=40)
    prompt["11"] = node("HyVideoVAEEncode", vae=["5", 0], images=["10", 0], tiling="auto")
    prompt[SAMPLER]["inputs"]["samples"] = ["11", 0]
    result = runner.run(prompt).expect_success()
    assert ui_text(result, "10").startswith("11 frames of 40x40")
    encoded = ui_text(result, "11")
    assert "11 frames trimmed to 9" in encoded and "40x40 centre-cropped to 32x32" in encoded
    assert list(result.results["11"][0]["samples"].shape) == [1, 16, 3, 4, 4]
    assert list(sampled(result).shape) == [1, 16, 3, 4, 4]
    sampler_text = ui_text(result, SAMPLER)
    assert "32x32x9 taken from the samples input" in sampler_text and "2 steps" in sampler_text
    # denoise 0.5 keeps the source: closer to it than a text-to-video run of the same size and seed
    source = result.results["11"][0]["samples"]
    t2v = sampled(runner.run(t2v_prompt(steps=4, frames=9)).expect_success())
    assert (sampled(result) - source).norm() < (t2v - source).norm()


def test_keyframes_with_the_keyframe_lora(setup):
    runner, _ = setup
    prompt = t2v_prompt(loras=[(KEYFRAME_LORA, 1.0)], width=64, height=64, frames=33)
    prompt["10"] = node("HyVideoLoadImage", image="first.png")
    prompt["11"] = node("HyVideoLoadImage", image="last.png")
    prompt["12"] = node("HyVideoKeyframeEncode", vae=["5", 0], width=32, height=48, frames=9, encode_seed=0,
                        tiling="off", first_image=["10", 0], last_image=["11", 0])
    prompt[SAMPLER]["inputs"]["keyframes"] = ["12", 0]
    both = runner.run(prompt).expect_success()
    assert list(result_image(both, "10").shape) == [1, 48, 80, 3]
    assert list(sampled(both).shape) == [1, 16, 3, 6, 4]               # the keyframes' 32x48x9
    assert "taken from the keyframes" in ui_text(both, SAMPLER) and "widened from 16 to 32" in ui_text(both, SAMPLER)
    del prompt["12"]["inputs"]["last_image"]
    first_only = runner.run(prompt).expect_success()
    assert "first frame for 32x48x9" in ui_text(first_only, "12")
    assert not torch.equal(sampled(first_only), sampled(both))
    # Back to plain text-to-video on the same cached model: the widening is undone.
    plain = runner.run(t2v_prompt()).expect_success()
    assert list(sampled(plain).shape) == [1, 16, 2, 4, 4]


def result_image(result, node_id):
    return result.results[node_id][0]


def test_custom_decode_tiles_reach_the_vae(setup):
    # The tiling numerics are the VAE tests' business (tests/test_vae_tiling.py); here: the node's
    # widgets become the tile spec, and the result has the untiled shape.
    runner, _ = setup
    prompt = t2v_prompt(width=64, frames=9)
    prompt["6"]["inputs"].update(tiling="custom", spatial_tile=32, spatial_overlap=8, temporal_tile=8,
                                 temporal_overlap=4)
    tiled = runner.run(prompt).expect_success()
    assert "space 32px/8px overlap, time 8f/4f overlap" in ui_text(tiled, "6")
    images = result_image(tiled, "6")
    assert images.shape == (9, 32, 64, 3) and bool(images.isfinite().all())
    prompt["6"]["inputs"].update(spatial_tile=0)
    assert "space untiled, time 8f/4f overlap" in ui_text(runner.run(prompt).expect_success(), "6")


def test_native_latents_feed_the_sampler_and_native_conditioning_works(setup):
    runner, _ = setup
    direct = sampled(runner.run(t2v_prompt()).expect_success())
    prompt = t2v_prompt()
    prompt["10"] = node("NativeEmptyLatent", width=32, length=5)
    prompt[SAMPLER]["inputs"]["samples"] = ["10", 0]
    from_empty = runner.run(prompt).expect_success()
    assert torch.equal(sampled(from_empty), direct)   # denoise 1: only the shape of the native latent is used
    assert "only its shape is used" in ui_text(from_empty, SAMPLER)
    assert "['noise_mask'] (e.g. a noise mask) are not used" in ui_text(from_empty, SAMPLER)
    bridged = t2v_prompt()
    bridged["10"] = node("NativeConditioning", embeds=["3", 0])
    bridged["11"] = node("HyVideoConditioningToEmbeds", positive=["10", 0])
    bridged[SAMPLER]["inputs"]["embeds"] = ["11", 0]
    assert torch.equal(sampled(runner.run(bridged).expect_success()), direct)


def test_embeds_to_native_conditioning(setup):
    runner, _ = setup
    prompt = t2v_prompt()
    prompt["10"] = node("HyVideoEmbedsToConditioning", embeds=["3", 0])
    prompt["11"] = node("HyVideoConditioningToEmbeds", positive=["10", 0], negative=["10", 1])
    prompt[SAMPLER]["inputs"]["embeds"] = ["11", 0]
    result = runner.run(prompt).expect_success()
    (cond, extras), = result.results["10"][0]
    assert cond.shape[0] == 1 and cond.shape[2] == 64 and list(extras["pooled_output"].shape) == [1, 32]
    assert "repeats the positive" in ui_text(result, "10")
