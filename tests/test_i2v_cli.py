"""`hyvideo generate --image`: the demo models (text-only encoding, noted), a tiny 33-channel
latent_concat DiT built from the demo's (the first 4 decoded frames dropped), and bad images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from hyvideo_core.cli import _demo_files, main
from hyvideo_core.video import read_video

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = ["generate", "--steps", "2", "--frames", "9", "--width", "64", "--height", "48"]


@pytest.fixture(scope="module")
def first_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("i2v") / "first.png"
    pixels = (np.random.default_rng(0).random((60, 120, 3)) * 255).astype("uint8")   # 2:1, the video is 4:3
    Image.fromarray(pixels).save(path)
    return path


def test_demo_with_an_image_runs_text_only_and_notes_it(tmp_path, first_png, capsys):
    out = tmp_path / "i2v.gif"
    assert main([*RUN, "--demo", "--image", str(first_png), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no vision tower" in err and "text only" in err
    assert "shift 7, the official value for --i2v-stability" in err
    assert "another aspect ratio" in err and "encoding image" in err
    clip = read_video(out)
    assert clip.frame_count == 9 and clip.size == (64, 48)
    assert main([*RUN, "--demo", "-o", str(tmp_path / "t2v.gif")]) == 0
    assert (read_video(tmp_path / "t2v.gif").frames != clip.frames).any()   # the image changed the video


def test_dynamic_default_shift_and_a_given_shift(tmp_path, first_png, capsys):
    assert main([*RUN, "--demo", "--steps", "1", "--image", str(first_png), "--no-i2v-stability",
                 "-o", str(tmp_path / "a.gif")]) == 0
    assert "shift 17, the official value for dynamic" in capsys.readouterr().err
    assert main([*RUN, "--demo", "--steps", "1", "--image", str(first_png), "--shift", "5",
                 "-o", str(tmp_path / "b.gif")]) == 0
    assert "the official value" not in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "not_an_image"])
def test_a_bad_image_is_refused_before_any_model_loads(tmp_path, kind, capsys):
    path = tmp_path / "first.png"
    if kind == "not_an_image":
        path.write_text("no pixels here")
    out = tmp_path / "x.gif"
    assert main([*RUN, "--demo", "--image", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--image {path}" in err and ("no such file" if kind == "missing" else "not a readable image") in err
    assert "loading" not in err and not out.exists()


def test_a_mode_the_dit_cannot_take_is_refused_before_loading(tmp_path, first_png, capsys):
    assert main([*RUN, "--demo", "--image", str(first_png), "--i2v-mode", "latent_concat",
                 "-o", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert "i2v_mode='latent_concat' needs a DiT with 33 input channels" in err and "loading" not in err


def test_i2v_mode_without_an_image_is_refused(tmp_path, capsys):
    assert main([*RUN, "--demo", "--i2v-mode", "skyreels", "-o", str(tmp_path / "x.gif")]) == 2
    assert "give the first frame with --image" in capsys.readouterr().err


def test_latent_concat_dit_drops_the_first_4_frames(tmp_path, first_png, capsys):
    demo = _demo_files()
    weights = load_file(str(demo.dit))
    proj = weights["img_in.proj.weight"]
    extra = torch.randn(proj.shape[0], 17, *proj.shape[2:], generator=torch.Generator().manual_seed(0)) * 0.05
    weights["img_in.proj.weight"] = torch.cat([proj, extra], dim=1).contiguous()
    weights = {k: v for k, v in weights.items() if not k.startswith("guidance_in.")}
    dit = tmp_path / "i2v_33ch.safetensors"
    save_file(weights, str(dit))
    out = tmp_path / "concat.gif"
    assert main([*RUN, "--dit", str(dit), "--vae", str(demo.vae), "--llm", str(demo.llm), "--clip", str(demo.clip),
                 "--image", str(first_png), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "latent_concat" in err and "dropped the first 4 decoded frames" in err
    assert read_video(out).frame_count == 9 - 4
