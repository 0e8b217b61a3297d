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


def test_argument_errors_exit_nonzero():
    with pytest.raises(SystemExit) as exit_:
        main(["nonsense"])
    assert exit_.value.code != 0


@pytest.mark.parametrize("command", ["generate", "plan"])
@pytest.mark.parametrize("swap", ["x", "10", "-1,3"])
def test_a_bad_swap_is_the_same_clear_error_in_both_commands(command, swap, capsys):
    assert main([command, f"--swap={swap}", *(["--demo"] if command == "generate" else [])]) == 2
    assert f"--swap '{swap}'" in capsys.readouterr().err


def test_plan_and_generate_snap_the_same_way_and_warn_once(tmp_path, capsys):
    assert main(["plan", "--width", "1001", "--height", "544", "--frames", "130"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("1001x544 rounded up to 1008x544") == 1
    assert captured.err.count("frames 130 rounded down to 129") == 1
    assert "1008x544x129" in captured.out
    assert main(["generate", "--demo", "--width", "100", "--steps", "1", "--frames", "6", "-o",
                 str(tmp_path / "x.gif")]) == 0
    err = capsys.readouterr().err
    assert err.count("rounded up to 112x128") == 1 and err.count("frames 6 rounded down to 5") == 1
    assert "hyvideo: 112x128x5, 1 steps" in err   # the header shows the size actually generated


@pytest.mark.parametrize("size", [["--width", "0"], ["--height", "-720"], ["--frames", "0"]])
def test_plan_refuses_non_positive_sizes(size, capsys):
    assert main(["plan", *size]) == 2
    assert size[0] in capsys.readouterr().err


def test_every_stage_reports_and_the_run_ends_with_one_summary_line(tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["generate", "--demo", "--steps", "2", "--frames", "5", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    for stage in ("loading text encoders", "text encoding", "loading DiT", "sampling", "loading VAE", "decoding",
                  "writing"):
        assert f"{stage} ..." in err and f"{stage}: " in err, stage
    assert " MB at " in err   # loading reports bytes per second
    summary = [line for line in err.splitlines() if line.startswith("wrote ")]
    assert len(summary) == 1 and str(out) in summary[0] and "5 frames of 128x128" in summary[0]
    assert "sampling" in summary[0] and "peak memory" in summary[0]


def test_help_shows_defaults_and_a_bare_generate_points_to_the_demo(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "(default: 50)" in capsys.readouterr().out
    assert main(["generate"]) == 2
    assert "--demo" in capsys.readouterr().err
    assert main(["generate", "--models-dir", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_plan_per_gpu_under_sequence_parallel(capsys):
    assert main(["plan", "--width", "1280", "--height", "720", "--gpus", "8", "--ulysses-degree", "8",
                 "--vram-gb", "32", "--swap", "off"]) == 0
    out = capsys.readouterr().out
    assert "per GPU of 8 (ulysses 8 x ring 1)" in out and "14850 of 118800 image tokens" in out
    assert out.strip().endswith("fits in 32.0 GiB per GPU (each of the 8)")
    assert main(["plan", "--width", "1280", "--height", "720", "--vram-gb", "32", "--swap", "off"]) == 0
    assert capsys.readouterr().out.strip().endswith("does NOT fit in 32.0 GiB")   # one card alone
    assert main(["plan", "--gpus", "8", "--ulysses-degree", "4"]) == 2
    assert "1x8, 2x4, 4x2, 8x1" in capsys.readouterr().err
    assert main(["plan", "--gpus", "8", "--ulysses-degree", "16", "--ring-degree", "1"]) == 2
    assert "allowed: 1, 2, 3, 4, 6, 8, 12, 24" in capsys.readouterr().err
