"""diffusers' HunyuanVideoTransformer3DModel is an independent oracle for the DiT."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import hyvideo_core
from conftest import golden_tensors
from hyvideo_core.weights.diffusers_names import to_diffusers

diffusers = pytest.importorskip("diffusers")


def _diffusers_model(cfg, state):
    model = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim, num_layers=cfg.double_blocks, num_single_layers=cfg.single_blocks,
        num_refiner_layers=cfg.refiner_blocks, mlp_ratio=cfg.mlp_ratio, patch_size=cfg.patch_size[1],
        patch_size_t=cfg.patch_size[0], guidance_embeds=cfg.guidance_embed, text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_text_dim, rope_theta=cfg.rope_theta, rope_axes_dim=cfg.rope_dims)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def diffusers_state(golden_dit):
    return to_diffusers(golden_dit.state_dict(), golden_dit.config.hidden_size)


@pytest.mark.parametrize("name", ["b2_t3_h8_w12_pad", "b1_t5_h6_w10_nopad"])
def test_same_output_as_diffusers(golden_dit, diffusers_state, name):
    case = golden_tensors("dit", "cases", f"{name}.safetensors")
    reference = _diffusers_model(golden_dit.config, diffusers_state)
    with torch.no_grad():
        expected = reference(hidden_states=case["x"], timestep=case["t"], encoder_hidden_states=case["text_states"],
                             encoder_attention_mask=case["text_mask"], pooled_projections=case["text_states_2"],
                             guidance=case["guidance"], return_dict=False)[0]
        ours = golden_dit(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_diffusers_folder_loads_back(golden_dit, diffusers_state, tmp_path):
    """A diffusers folder (config + sharded safetensors + index) loads to the same weights."""
    keys = sorted(diffusers_state)
    half = len(keys) // 2
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}
    folder = tmp_path / "transformer"
    folder.mkdir()
    for fname, names in shards.items():
        save_file({k: diffusers_state[k].contiguous() for k in names}, str(folder / fname))
    index = {"metadata": {}, "weight_map": {k: f for f, names in shards.items() for k in names}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    loaded = hyvideo_core.load_transformer(tmp_path, config="tiny", dtype=torch.float32)
    assert loaded.load_report.format == "diffusers"
    expected = golden_dit.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
