"""hyvideo_core.video: mp4/webm/gif written atomically and read back."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from hyvideo_core.errors import CancelledError, InvalidInputError
from hyvideo_core.video import frames_to_uint8, numbered_path, read_video, write_video


def smooth_frames(count=9, height=48, width=64) -> torch.Tensor:
    """Gradients that move over time: codecs keep these close, so content can be checked."""
    t = torch.linspace(0, 1, count)[:, None, None]
    y = torch.linspace(0, 1, height)[None, :, None]
    x = torch.linspace(0, 1, width)[None, None, :]
    shape = (count, height, width)
    red = ((x + t) % 1.0 * 0.8 + 0.1).expand(shape)
    return torch.stack([red, y.expand(shape), ((1 - x) * t).expand(shape)], dim=-1)


@pytest.mark.parametrize("ext, tolerance", [("mp4", 0.03), ("webm", 0.03), ("gif", 0.03)])
def test_written_video_reads_back_with_its_frames(tmp_path, ext, tolerance):
    frames = smooth_frames()
    path = write_video(frames, tmp_path / f"clip.{ext}", fps=12)
    assert path == tmp_path / f"clip.{ext}" and path.is_file()
    clip = read_video(path)
    assert clip.frame_count == 9
    assert clip.size == (64, 48)
    assert clip.fps == pytest.approx(12, rel=0.05)
    error = np.abs(clip.frames / 255.0 - frames.numpy()).mean()
    assert error < tolerance, f"{ext}: mean abs error {error:.4f}"
    assert os.listdir(tmp_path) == [f"clip.{ext}"]  # no temporary file left beside it


def test_crf_changes_the_mp4_quality(tmp_path):
    frames = torch.rand(5, 32, 32, 3)
    best = write_video(frames, tmp_path / "best.mp4", crf=0)
    worst = write_video(frames, tmp_path / "worst.mp4", crf=51)
    assert best.stat().st_size > 2 * worst.stat().st_size


def test_cancelled_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous video")
    calls = []

    def stop_after_three():
        calls.append(1)
        if len(calls) > 3:
            raise CancelledError("interrupted")

    with pytest.raises(CancelledError):
        write_video(smooth_frames(), target, should_stop=stop_after_three)
    assert target.read_bytes() == b"previous video"
    assert os.listdir(tmp_path) == ["clip.mp4"]

    with pytest.raises(CancelledError):
        write_video(smooth_frames(), tmp_path / "new.gif", should_stop=stop_after_three)
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_encoder_failure_leaves_no_file(tmp_path, monkeypatch):
    import imageio.v2

    real_get_writer = imageio.v2.get_writer

    def writer_that_fills_the_disk(*args, **kwargs):
        writer = real_get_writer(*args, **kwargs)
        real_append, written = writer.append_data, []

        def append(frame):
            if len(written) == 3:
                raise OSError("No space left on device")
            written.append(1)
            real_append(frame)
        writer.append_data = append
        return writer

    monkeypatch.setattr(imageio.v2, "get_writer", writer_that_fills_the_disk)
    with pytest.raises(OSError, match="No space"):
        write_video(smooth_frames(), tmp_path / "broken.mp4")
    assert os.listdir(tmp_path) == []


def test_odd_sizes_are_padded_and_reported(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        path = write_video(torch.rand(3, 33, 47, 3), tmp_path / "odd.mp4")
    assert read_video(path).size == (48, 34)
    assert "padded to 48x34" in caplog.text


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(InvalidInputError, match="avi"):
        write_video(torch.rand(2, 8, 8, 3), tmp_path / "x.avi")
    with pytest.raises(InvalidInputError, match=r"\[frames, height, width, 3\]"):
        write_video(torch.rand(8, 8, 3), tmp_path / "x.mp4")
    with pytest.raises(InvalidInputError, match="crf"):
        write_video(torch.rand(2, 8, 8, 3), tmp_path / "x.mp4", crf=99)
    with pytest.raises(InvalidInputError, match="fps"):
        write_video(torch.rand(2, 8, 8, 3), tmp_path / "x.gif", fps=0)
    assert os.listdir(tmp_path) == []


def test_frames_convert_to_rounded_clamped_uint8():
    frames = torch.tensor([0.0, 0.5, 1.0, 1.7, -0.2]).reshape(5, 1, 1, 1).expand(5, 1, 1, 3)
    array = frames_to_uint8(frames)
    assert array.dtype == np.uint8 and array[:, 0, 0, 0].tolist() == [0, 128, 255, 255, 0]


def test_numbered_paths_count_up_and_stay_inside(tmp_path):
    first = numbered_path(tmp_path, "hv/clip", ".mp4")
    assert first == tmp_path / "hv" / "clip_00001.mp4"
    first.write_bytes(b"x")
    (tmp_path / "hv" / "clip_00007.mp4").write_bytes(b"x")
    assert numbered_path(tmp_path, "hv/clip", ".mp4").name == "clip_00008.mp4"
    assert numbered_path(tmp_path, "hv/clip", ".gif").name == "clip_00001.gif"
    with pytest.raises(InvalidInputError, match="outside the output folder"):
        numbered_path(tmp_path, "../escape", ".mp4")
