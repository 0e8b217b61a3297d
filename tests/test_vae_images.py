"""Frames <-> ComfyUI IMAGE conversion."""
from __future__ import annotations

import logging

import pytest
import torch

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.vae.images import images_to_video, trim_to_valid_frames, valid_frame_count, video_to_images


def test_video_to_images_layout_range_and_batch_order():
    video = torch.rand(2, 3, 5, 4, 6) * 2.4 - 1.2  # a little outside -1..1: clamped
    images = video_to_images(video)
    assert images.shape == (10, 4, 6, 3) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    # image 7 = video 1, frame 2; channels last; x/2 + 0.5
    expected = (video[1, :, 2].permute(1, 2, 0) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(images[7], expected)


def test_round_trip_per_video():
    video = torch.rand(2, 3, 5, 4, 6) * 2 - 1
    back = images_to_video(video_to_images(video), frames_per_video=5)
    torch.testing.assert_close(back, video, atol=1e-6, rtol=0)
    assert images_to_video(video_to_images(video)).shape == (1, 3, 10, 4, 6)


def test_bf16_video_and_single_image():
    video = (torch.rand(1, 3, 1, 2, 2) * 2 - 1).to(torch.bfloat16)
    assert video_to_images(video).dtype == torch.float32
    assert images_to_video(torch.rand(8, 8, 3)).shape == (1, 3, 1, 8, 8)


def test_alpha_is_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        video = images_to_video(torch.rand(3, 4, 4, 4))
    assert video.shape == (1, 3, 3, 4, 4) and "alpha" in caplog.text


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="cannot be split into videos of 4 frames"):
        images_to_video(torch.rand(10, 4, 4, 3), frames_per_video=4)
    with pytest.raises(InvalidInputError, match=r"\[frames, height, width, 3\]"):
        images_to_video(torch.rand(10, 4, 4, 2))
    with pytest.raises(InvalidInputError, match=r"\[B, 3, frames, H, W\]"):
        video_to_images(torch.rand(1, 4, 2, 4, 4))


def test_trim_to_4k_plus_1_frames_says_so(caplog):
    assert [valid_frame_count(n) for n in (1, 4, 5, 8, 9, 130)] == [1, 1, 5, 5, 9, 129]
    with caplog.at_level(logging.WARNING):
        trimmed = trim_to_valid_frames(torch.zeros(1, 3, 12, 2, 2))
    assert trimmed.shape[2] == 9 and "Trimmed 12 frames to 9" in caplog.text
    assert trim_to_valid_frames(torch.zeros(13, 2, 2, 3), dim=0).shape[0] == 13
