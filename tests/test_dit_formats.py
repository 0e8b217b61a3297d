"""Every checkpoint layout users have loads to the same parameters; variants come from shapes."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import hyvideo_core
from conftest import golden_path
from hyvideo_core.weights.comfy_names import official_to_comfy
from hyvideo_core.weights.diffusers_names import to_diffusers


@pytest.fixture(scope="module")
def official(golden_dit_weights):
    return golden_dit_weights


def _save_safetensors(sd, path):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def _writers(official):
    return {
        "official .pt (module dict)": lambda p: torch.save({"module": official}, p / "mp_rank_00_model_states.pt") or p / "mp_rank_00_model_states.pt",
        "official safetensors": lambda p: _save_safetensors(official, p / "a.safetensors"),
        "comfy-prefixed": lambda p: _save_safetensors({f"model.diffusion_model.{k}": v for k, v in official.items()}, p / "b.safetensors"),
        "diffusion_model-prefixed": lambda p: _save_safetensors({f"diffusion_model.{k}": v for k, v in official.items()}, p / "c.safetensors"),
        "comfy internal names": lambda p: _save_safetensors({official_to_comfy(k): v for k, v in official.items()}, p / "d.safetensors"),
        "comfy internal, prefixed": lambda p: _save_safetensors({"model.diffusion_model." + official_to_comfy(k): v for k, v in official.items()}, p / "e.safetensors"),
        "diffusers single file": lambda p: _save_safetensors(to_diffusers(official, 64), p / "f.safetensors"),
    }


@pytest.mark.parametrize("kind", list(_writers({})))
def test_every_layout_loads_identical_parameters(official, tmp_path, kind):
    path = _writers(official)[kind](tmp_path)
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32)
    loaded = model.state_dict()
    assert set(loaded) == set(official)
    for key, value in official.items():
        assert torch.equal(loaded[key], value), key


def test_state_dict_source_is_copied_not_aliased(official):
    model = hyvideo_core.load_transformer(official, config="tiny", dtype=torch.float32)
    assert model.img_in.proj.weight.data_ptr() != official["img_in.proj.weight"].data_ptr()


def test_config_inferred_from_shapes(official):
    model = hyvideo_core.load_transformer(official, dtype=torch.float32)
    cfg = model.config
    assert (cfg.hidden_size, cfg.heads, cfg.double_blocks, cfg.single_blocks, cfg.text_dim, cfg.pooled_text_dim) == (64, 2, 2, 2, 64, 32)
    assert cfg.guidance_embed and cfg.variant == "t2v"


def test_reference_config_dict_accepted_as_is(golden_dit_config):
    model = hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config=golden_dit_config)
    assert model.config.rope_dims == (8, 12, 12) and model.compute_dtype == torch.float32


@pytest.mark.parametrize("channels,variant", [(16, "t2v"), (32, "keyframe_or_skyreels"), (33, "i2v_concat")])
def test_variant_detected_from_patch_embed_shape(official, channels, variant):
    sd = dict(official)
    w = sd["img_in.proj.weight"]
    sd["img_in.proj.weight"] = torch.cat([w, torch.zeros(w.shape[0], channels - 16, *w.shape[2:])], dim=1)
    model = hyvideo_core.load_transformer(sd, config="tiny", dtype=torch.float32)
    assert model.load_report.variant == variant and model.config.in_channels == channels


def test_guidance_embed_from_key_presence(official):
    sd = {k: v for k, v in official.items() if not k.startswith("guidance_in.")}
    model = hyvideo_core.load_transformer(sd, config="tiny", dtype=torch.float32)
    assert not model.config.guidance_embed and not hasattr(model, "guidance_in")


def test_load_report_names_format_and_variant(official, tmp_path):
    path = _writers(official)["comfy-prefixed"](tmp_path)
    report = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32).load_report
    assert (report.format, report.prefix, report.variant) == ("official", "model.diffusion_model.", "t2v")
    assert "t2v" in report.summary()


def test_other_models_in_the_same_file_are_reported_not_loaded(official, tmp_path):
    sd = {f"model.diffusion_model.{k}": v for k, v in official.items()}
    sd["first_stage_model.decoder.conv_in.weight"] = torch.zeros(2)
    model = hyvideo_core.load_transformer(_save_safetensors(sd, tmp_path / "full.safetensors"), config="tiny")
    assert model.load_report.other_keys == 1
