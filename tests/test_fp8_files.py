"""fp8 checkpoints as released: Comfy-Org fp8_scaled (their own scales), kijai plain fp8, official .pt + map."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import hyvideo_core
from conftest import golden_tensors
from hyvideo_core.errors import CheckpointError
from hyvideo_core.weights.comfy_names import official_to_comfy
from hyvideo_core.weights.quantised_layers import is_quantisable
from hyvideo_core.weights.storage import storage_for

E4M3 = torch.float8_e4m3fn


def AUTO():
    return storage_for("auto")


@pytest.fixture(scope="module")
def official(golden_dit_weights):
    return golden_dit_weights


@pytest.fixture(scope="module")
def case():
    return golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")


def _run(model, case):
    with torch.no_grad():
        return model(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])


def _quantised(official, headroom=300.0):
    """{official key: (fp8 weight, scale)} with scale = max|w| / 300: deliberately NOT what a loader
    would pick (max/448), so a loader that recomputes or ignores the file's scales is caught."""
    out = {}
    for key, w in official.items():
        if is_quantisable(key, tuple(w.shape)):
            scale = (w.abs().max() / headroom).reshape(())
            out[key] = ((w / scale).to(E4M3), scale)
    return out


def _comfy_scaled_file(official, path, drop_scale_of=None):
    """A Comfy-Org style *_fp8_scaled.safetensors: comfy names, prefix, marker, scale_weight/scale_input."""
    sd = {"scaled_fp8": torch.empty(0, dtype=E4M3)}
    quant = _quantised(official)
    for key, w in official.items():
        name = "model.diffusion_model." + official_to_comfy(key)
        if key in quant:
            q, scale = quant[key]
            sd[name] = q
            module = name.rsplit(".", 1)[0]
            if key != drop_scale_of:
                sd[module + ".scale_weight"] = scale
            sd[module + ".scale_input"] = torch.tensor(0.01)
        else:
            sd[name] = w.to(torch.bfloat16)
    save_file(sd, str(path))
    return path, quant


def test_comfy_fp8_scaled_uses_the_files_scales(official, case, golden_dit, tmp_path):
    path, quant = _comfy_scaled_file(official, tmp_path / "hunyuan_video_fp8_scaled.safetensors")
    for fmt in ("auto", "fp8_scaled", "fp8_e4m3fn"):
        model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=storage_for(fmt))
        for key, (q, scale) in quant.items():
            layer = model.get_submodule(key.rsplit(".", 1)[0])
            assert torch.equal(layer.weight.view(torch.uint8), q.view(torch.uint8)), key  # bytes untouched
            assert torch.equal(layer.scale_weight, scale), key                          # the file's scale
            assert layer.scale_input.item() == pytest.approx(0.01)
        rel = ((_run(model, case) - _run(golden_dit, case)).norm() / _run(golden_dit, case).norm()).item()
        assert rel < 0.03, (fmt, rel)
    assert model.load_report.format == "comfy"


def test_fp8_scaled_state_dict_round_trips_scales(official, tmp_path):
    path, quant = _comfy_scaled_file(official, tmp_path / "a_fp8_scaled.safetensors")
    first = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=AUTO())
    saved = first.state_dict()
    assert "double_blocks.0.img_attn_qkv.scale_weight" in saved
    save_file({k: v.contiguous() for k, v in saved.items()}, str(tmp_path / "resaved.safetensors"))
    second = hyvideo_core.load_transformer(tmp_path / "resaved.safetensors", config="tiny", dtype=torch.float32,
                                           storage=AUTO())
    again = second.state_dict()
    assert set(again) == set(saved)
    for key, value in saved.items():
        assert again[key].dtype == value.dtype, key
        assert torch.equal(again[key].reshape(-1).view(torch.uint8), value.reshape(-1).view(torch.uint8)), key


def test_ignoring_the_scales_would_be_wrong(official, case, golden_dit, tmp_path):
    """Guard against the wrapper bug users reported: the same bytes with scale 1 are garbage."""
    path, _ = _comfy_scaled_file(official, tmp_path / "s.safetensors")
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=AUTO())
    ref = _run(golden_dit, case)
    good = ((_run(model, case) - ref).norm() / ref.norm()).item()
    for module in model.modules():
        if hasattr(module, "scale_weight"):
            module.scale_weight.fill_(1.0)
    bad = ((_run(model, case) - ref).norm() / ref.norm()).item()
    assert good < 0.03 and bad > 10 * good


def test_missing_scale_in_a_scaled_file_is_an_error(official, tmp_path):
    key = "double_blocks.1.txt_attn_proj.weight"
    path, _ = _comfy_scaled_file(official, tmp_path / "broken.safetensors", drop_scale_of=key)
    with pytest.raises(CheckpointError, match=r"txt_attn\.proj.*no scale"):
        hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=AUTO())


def test_kijai_plain_fp8_loads_with_unit_scale(official, case, golden_dit, tmp_path):
    sd = {k: (v.to(E4M3) if is_quantisable(k, tuple(v.shape)) else v.to(torch.bfloat16)) for k, v in official.items()}
    save_file(sd, str(tmp_path / "hunyuan_video_720_fp8_e4m3fn.safetensors"))
    model = hyvideo_core.load_transformer(tmp_path / "hunyuan_video_720_fp8_e4m3fn.safetensors", config="tiny",
                                          dtype=torch.float32, storage=AUTO())
    layer = model.double_blocks[0].img_attn_qkv
    assert layer.scale_weight.item() == 1.0 and model.load_report.storage == "auto:fp8_e4m3fn"
    ref = _run(golden_dit, case)
    assert ((_run(model, case) - ref).norm() / ref.norm()).item() < 0.03


def _official_pt(official, folder, with_map=True, drop=None):
    quant = _quantised(official)
    sd = {k: (quant[k][0] if k in quant else v.to(torch.bfloat16)) for k, v in official.items()}
    torch.save({"module": sd}, folder / "mp_rank_00_model_states_fp8.pt")
    if with_map:
        scales = {k.rsplit(".", 1)[0]: s for k, (_, s) in quant.items() if k.rsplit(".", 1)[0] != drop}
        torch.save(scales, folder / "mp_rank_00_model_states_fp8_map.pt")
    return folder / "mp_rank_00_model_states_fp8.pt", quant


def test_official_fp8_pt_with_its_map(official, case, golden_dit, tmp_path):
    path, quant = _official_pt(official, tmp_path)
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=AUTO())
    for key, (_, scale) in quant.items():
        assert torch.equal(model.get_submodule(key.rsplit(".", 1)[0]).scale_weight, scale)
    ref = _run(golden_dit, case)
    assert ((_run(model, case) - ref).norm() / ref.norm()).item() < 0.03


def test_official_fp8_pt_without_map_is_an_error(official, tmp_path):
    path, _ = _official_pt(official, tmp_path, with_map=False)
    with pytest.raises(CheckpointError, match="_fp8_map.pt"):
        hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=AUTO())


def test_official_map_missing_a_layer_is_an_error(official, tmp_path):
    path, _ = _official_pt(official, tmp_path, drop="single_blocks.0.linear2")
    with pytest.raises(CheckpointError, match=r"single_blocks\.0\.linear2"):
        hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=AUTO())


def test_plain_storage_of_an_fp8_file_dequantises_with_its_scales(official, case, golden_dit, tmp_path):
    path, _ = _comfy_scaled_file(official, tmp_path / "s.safetensors")
    model = hyvideo_core.load_transformer(path, config="tiny", storage=storage_for("fp32"))
    assert model.compute_dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ref = _run(golden_dit, case)
    assert ((_run(model, case) - ref).norm() / ref.norm()).item() < 0.03


def test_requesting_e5m2_requantises_an_e4m3_file(official, tmp_path):
    path, quant = _comfy_scaled_file(official, tmp_path / "s.safetensors")
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=storage_for("fp8_e5m2"))
    layer = model.double_blocks[0].img_mlp.fc1
    q, scale = quant["double_blocks.0.img_mlp.fc1.weight"]
    assert layer.weight.dtype == torch.float8_e5m2
    expected = q.float() * scale
    assert ((layer.codec.dequantize(layer) - expected).norm() / expected.norm()).item() < 0.1
