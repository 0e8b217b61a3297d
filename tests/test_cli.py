"""The `hyvideo` command: the demo runs the whole pipeline and writes a playable video."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hyvideo_core.cli import main
from hyvideo_core.video import read_video


def test_demo_writes_a_playable_mp4_in_under_a_minute(tmp_path):
    out = tmp_path / "demo.mp4"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hyvideo_core", "generate", "--demo", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    clip = read_video(out)
    assert clip.frame_count == 17 and clip.size == (128, 128)
    assert clip.frames.std() > 1  # an image, not a blank frame
    assert elapsed < 60, f"demo took {elapsed:.1f} s"


def test_same_seed_same_video_other_seed_other_video(tmp_path, capsys):
    outputs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert main(["generate", "--demo", "--steps", "2", "--frames", "5", "--seed", str(seed),
                     "-o", str(tmp_path / f"{name}.gif")]) == 0
        outputs[name] = read_video(tmp_path / f"{name}.gif").frames
    assert (outputs["a"] == outputs["b"]).all()
    assert (outputs["a"] != outputs["c"]).any()


def test_missing_model_names_the_folders_searched(tmp_path, capsys):
    (tmp_path / "diffusion_models").mkdir()
    assert main(["generate", "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "hunyuan_video_t2v_720p_bf16.safetensors" in err and str(tmp_path / "diffusion_models") in err


def test_bad_option_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "--demo", "--steps", "0", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "steps" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_plan_prints_a_breakdown(capsys):
    assert main(["plan", "--weight-format", "fp8_scaled", "--vram-gb", "24"]) == 0
    out = capsys.readouterr().out
    assert "GiB" in out and "single" in out


@pytest.mark.parametrize("argv", [["generate", "--swap", "x"], ["nonsense"]])
def test_argument_errors_exit_nonzero(argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code != 0
