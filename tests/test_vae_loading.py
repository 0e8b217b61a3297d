"""load_vae over every published layout, and the clear errors for wrong files and inputs."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

import hyvideo_core
from hyvideo_core.errors import CheckpointError, InvalidInputError, UnknownFormatError
from hyvideo_core.vae import PRESETS
from hyvideo_core.vae.config import config_from_dict, infer_config
from conftest import golden_json, golden_path, golden_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

# The official key listing (SPEC 3.1) lives in the shared reference folder beside the repo.
SHARED_KEYS = golden_path("..", "data", "vae_keys_official.json")  # copied from shared/reference




@pytest.fixture(scope="module")
def weights():
    return golden_tensors("vae", "weights.safetensors")


@pytest.fixture(scope="module")
def config():
    return golden_json("vae", "config.json")


@pytest.fixture(scope="module")
def decode_case():
    return golden_tensors("vae", "cases", "decode.safetensors")


def _assert_decodes_golden(vae, case):
    torch.testing.assert_close(vae.decode(case["latent"]), case["video"], atol=1e-4, rtol=0)


def test_official_safetensors(config, decode_case):
    vae = hyvideo_core.load_vae(golden_path("vae", "weights.safetensors"), config=config)
    report = vae.load_report
    assert (report.prefix, report.ignored_keys, report.has_encoder, report.config_from) == ("", 0, True, "argument")
    assert vae.dtype == torch.float32 and not any(p.requires_grad for p in vae.parameters())
    _assert_decodes_golden(vae, decode_case)


def test_tencent_pt_nested_and_prefixed_with_its_config(tmp_path, weights, config, decode_case):
    folder = tmp_path / "vae"
    folder.mkdir()
    torch.save({"state_dict": {f"vae.{k}": v for k, v in weights.items()}}, folder / "pytorch_model.pt")
    (folder / "config.json").write_text(json.dumps(config))
    for source in (folder / "pytorch_model.pt", folder, tmp_path):  # file, vae/ folder, model folder
        vae = hyvideo_core.load_vae(source)
        assert vae.load_report.prefix == "vae." and vae.load_report.config_from == "config.json"
    _assert_decodes_golden(vae, decode_case)


def test_comfy_org_bf16_file_keeps_its_dtype(tmp_path, weights, config):
    path = tmp_path / "hunyuan_video_vae_bf16.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, str(path))
    vae = hyvideo_core.load_vae(path, config=config)
    assert vae.dtype == torch.bfloat16 and vae.load_report.dtype == torch.bfloat16
    vae32 = hyvideo_core.load_vae(path, config=config, dtype="fp32")
    state = vae32.state_dict()
    assert all(torch.equal(state[k], v.to(torch.bfloat16).float()) for k, v in weights.items())


def test_diffusers_pipeline_folder(tmp_path, weights, decode_case):
    diffusers = pytest.importorskip("diffusers")
    model = diffusers.AutoencoderKLHunyuanVideo(block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                                                norm_num_groups=4)
    model.load_state_dict(weights, strict=True)
    model.save_pretrained(tmp_path / "vae")
    vae = hyvideo_core.load_vae(tmp_path)  # groups=4 comes from the folder's config.json
    assert vae.config.norm_num_groups == 4 and vae.load_report.config_from == "config.json"
    _assert_decodes_golden(vae, decode_case)


def test_vae_inside_a_bundled_checkpoint(weights, config, caplog):
    bundle = {f"vae.{k}": v for k, v in weights.items()}
    bundle["model.diffusion_model.img_in.proj.weight"] = torch.zeros(4, 16, 1, 2, 2)
    with caplog.at_level(logging.INFO):
        vae = hyvideo_core.load_vae(bundle, config=config)
    assert vae.load_report.ignored_keys == 1 and "1 other tensors were not loaded" in caplog.text


def test_decoder_only_file_decodes_but_cannot_encode(weights, config, decode_case):
    decoder_only = {k: v for k, v in weights.items() if not k.startswith(("encoder.", "quant_conv."))}
    vae = hyvideo_core.load_vae(decoder_only, config=config)
    _assert_decodes_golden(vae, decode_case)
    with pytest.raises(InvalidInputError, match="decoder-only"):
        vae.encode(torch.zeros(1, 3, 5, 16, 16))


# --- configs ----------------------------------------------------------------------------------
def test_golden_config_dict_is_accepted_as_is(config):
    assert config_from_dict(config) == PRESETS["tiny"]


def test_real_key_listing_infers_the_preset():
    shapes = {k: tuple(v) for k, v in json.loads(SHARED_KEYS.read_text()).items()}
    assert len(shapes) == 248
    assert infer_config(shapes) == PRESETS["884-16c-hy"]
    with torch.device("meta"):
        model = hyvideo_core.vae.HunyuanVideoVAE(PRESETS["884-16c-hy"])
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert sum(p.numel() for p in model.parameters()) == 246_478_803


def test_without_config_groups_are_guessed_and_said(weights, caplog):
    with caplog.at_level(logging.WARNING):
        vae = hyvideo_core.load_vae(weights)
    assert "norm_num_groups=8 was assumed" in caplog.text and vae.config.norm_num_groups == 8


# --- wrong files --------------------------------------------------------------------------------
def test_dit_file_given_as_vae():
    with pytest.raises(UnknownFormatError, match="transformer .DiT., not the HunyuanVideo 3D VAE"):
        hyvideo_core.load_vae(golden_path("dit", "weights.safetensors"))


def test_2d_image_vae_given_as_vae():
    with pytest.raises(UnknownFormatError, match="2D image VAE"):
        hyvideo_core.load_vae({"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)})


def test_missing_tensor_is_named(weights, config):
    broken = dict(weights)
    del broken["decoder.up_blocks.1.resnets.0.conv1.conv.bias"]
    with pytest.raises(CheckpointError, match="decoder.up_blocks.1.resnets.0.conv1.conv.bias"):
        hyvideo_core.load_vae(broken, config=config)


def test_config_that_does_not_fit_the_file(weights):
    with pytest.raises(CheckpointError, match=r"encoder.conv_in.conv.weight: file \[8, 3, 3, 3, 3\], model \[128, 3, 3, 3, 3\]"):
        hyvideo_core.load_vae(weights, config="884-16c-hy")


def test_unknown_dtype(weights, config):
    with pytest.raises(InvalidInputError, match="dtype='int8'"):
        hyvideo_core.load_vae(weights, config=config, dtype="int8")


# --- wrong inputs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae(config):
    return hyvideo_core.load_vae(golden_path("vae", "weights.safetensors"), config=config)


def test_wrong_latent_channel_count(vae):
    with pytest.raises(InvalidInputError, match=r"latent has shape \[1, 4, 3, 6, 6\].*16 channels"):
        vae.decode(torch.zeros(1, 4, 3, 6, 6))
    with pytest.raises(InvalidInputError, match="add a frame axis"):
        vae.decode(torch.zeros(1, 16, 6, 6))


def test_encode_rejects_frame_counts_that_are_not_4k_plus_1(vae):
    with pytest.raises(InvalidInputError, match="8 frames.*rejected, not snapped.*use 5 or 9 frames"):
        vae.encode(torch.zeros(1, 3, 8, 16, 16))


def test_encode_rejects_sizes_off_the_8_pixel_grid(vae):
    with pytest.raises(InvalidInputError, match="20x12 is not a multiple of 8"):
        vae.encode(torch.zeros(1, 3, 5, 12, 20))


def test_tiling_argument_must_be_known(vae):
    with pytest.raises(InvalidInputError, match="tiling='big'"):
        vae.decode(torch.zeros(1, 16, 1, 2, 2), tiling="big")
