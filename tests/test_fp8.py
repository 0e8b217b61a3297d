"""fp8 layers: numerics of the codec, the fast-path dispatch, store/dequantize, the golden DiT in fp8."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hyvideo_core
from conftest import golden_path, golden_tensors
from hyvideo_core.errors import InvalidInputError
from hyvideo_core.model.ops import Linear
from hyvideo_core.weights.fp8 import Fp8Codec, dequantize_tensor, install_fp8, quantize, scaled_mm_linear
from hyvideo_core.weights.storage import storage_for


def _fp8_layer(out_f=48, in_f=32, dtype=torch.float8_e4m3fn, scaled=True, fast=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = Linear(in_f, out_f)
    w = torch.randn(out_f, in_f, generator=g) * 0.02
    layer.bias.data = torch.randn(out_f, generator=g)
    q, scale = quantize(w, dtype, scaled=scaled)
    install_fp8(layer, q, scale, Fp8Codec(fast=fast))
    return layer, w


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("scaled", [True, False])
def test_layer_output_equals_dequantise_then_linear(dtype, scaled):
    layer, _ = _fp8_layer(dtype=dtype, scaled=scaled)
    x = torch.randn(2, 7, 32)
    expected = F.linear(x, layer.codec.dequantize(layer), layer.bias)
    assert torch.equal(layer(x), expected)


def test_scaled_quantisation_is_closer_than_plain_casting_for_small_weights():
    w = torch.randn(64, 64) * 0.004  # typical DiT weights sit in e4m3's subnormal range
    errors = {}
    for scaled in (True, False):
        q, scale = quantize(w, torch.float8_e4m3fn, scaled=scaled)
        errors[scaled] = ((dequantize_tensor(q, scale) - w).norm() / w.norm()).item()
    assert errors[True] < 0.05 < errors[False], errors


def test_scale_maps_max_weight_to_fp8_max():
    w = torch.tensor([[0.5, -2.0], [1.0, 0.25]])
    q, scale = quantize(w, torch.float8_e4m3fn)
    assert scale.item() == pytest.approx(2.0 / 448)
    assert q.float().abs().max().item() == 448


def test_store_requantises_with_fresh_scale():
    layer, _ = _fp8_layer()
    old_scale = layer.scale_weight.clone()
    merged = layer.codec.dequantize(layer) * 3.0  # e.g. after merging a LoRA in fp32
    layer.codec.store(layer, merged)
    assert layer.weight.dtype == torch.float8_e4m3fn
    assert layer.scale_weight.item() == pytest.approx(3 * old_scale.item(), rel=1e-6)
    torch.testing.assert_close(layer.codec.dequantize(layer), merged, rtol=0.07, atol=0)


def test_store_rejects_wrong_shape():
    layer, _ = _fp8_layer()
    with pytest.raises(InvalidInputError, match="shape"):
        layer.codec.store(layer, torch.zeros(3, 3))


def test_bytes_and_scale_move_with_the_layer():
    layer, _ = _fp8_layer()
    moved = layer.to("meta")
    assert moved.weight.dtype == torch.float8_e4m3fn and moved.scale_weight.device.type == "meta"


@pytest.mark.parametrize("capability,device,dtype,expected", [
    ((8, 9), "cuda", torch.bfloat16, "scaled_mm"),
    ((9, 0), "cuda", torch.float16, "scaled_mm"),
    ((8, 6), "cuda", torch.bfloat16, "dequantize"),   # Ampere: no fp8 tensor cores
    ((8, 9), "cuda", torch.float32, "dequantize"),    # _scaled_mm outputs half types here
    ((8, 9), "cpu", torch.bfloat16, "dequantize"),
])
def test_fast_path_dispatch(capability, device, dtype, expected):
    layer, _ = _fp8_layer(fast=True)
    assert layer.codec.select_path(layer, torch.device(device), dtype, capability=capability) == expected


def test_fast_path_needs_e4m3_and_multiples_of_16():
    e5, _ = _fp8_layer(dtype=torch.float8_e5m2, fast=True)
    odd, _ = _fp8_layer(out_f=40, in_f=24, fast=True)
    for layer in (e5, odd):
        assert layer.codec.select_path(layer, torch.device("cuda"), torch.bfloat16, capability=(9, 0)) == "dequantize"
    off, _ = _fp8_layer(fast=False)
    assert off.codec.select_path(off, torch.device("cuda"), torch.bfloat16, capability=(9, 0)) == "dequantize"
    assert not hasattr(off.codec, "linear")


def test_fast_codec_on_cpu_takes_the_exact_dequantise_path():
    layer, _ = _fp8_layer(fast=True)
    x = torch.randn(3, 32)
    assert torch.equal(layer(x), F.linear(x, layer.codec.dequantize(layer), layer.bias))


def _scaled_mm_on_cpu() -> bool:
    try:
        a = torch.zeros(16, 16, dtype=torch.float8_e4m3fn)
        torch._scaled_mm(a, a.t(), scale_a=torch.tensor(1.0), scale_b=torch.tensor(1.0), out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, NotImplementedError):
        return False


@pytest.mark.skipif(not _scaled_mm_on_cpu(), reason="this torch has no CPU _scaled_mm")
@pytest.mark.parametrize("with_input_scale", [False, True])
def test_scaled_mm_kernel_matches_dequantised_linear(with_input_scale):
    """The fast-path arithmetic (input quantisation, both scales, bias), run where torch allows."""
    layer, _ = _fp8_layer(fast=True)
    x = torch.randn(4, 8, 32)
    if with_input_scale:
        layer.register_buffer("scale_input", x.abs().amax() / 448)
    y = scaled_mm_linear(layer, x.to(torch.bfloat16)).float()
    ref = F.linear(x, layer.codec.dequantize(layer), layer.bias)
    assert ((y - ref).norm() / ref.norm()).item() < 0.05


# -- the golden tiny DiT in fp8 --------------------------------------------------------------

def _run(model, case):
    with torch.no_grad():
        return model(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])


@pytest.mark.parametrize("weight_format,tolerance", [("fp8_scaled", 0.03), ("fp8_e4m3fn", 0.03), ("fp8_e5m2", 0.05)])
def test_golden_dit_in_fp8_stays_close_to_fp32(golden_dit, golden_dit_config, weight_format, tolerance):
    model = hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config=golden_dit_config,
                                          dtype=torch.float32, storage=storage_for(weight_format))
    case = golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")
    ref, out = _run(golden_dit, case), _run(model, case)
    rel = ((out - ref).norm() / ref.norm()).item()
    print(f"{weight_format}: max |err| {(out - ref).abs().max().item():.4f}, relative L2 {rel:.4f}")
    assert rel < tolerance
    assert model.double_blocks[0].img_attn_qkv.weight.dtype == model.single_blocks[1].linear1.weight.dtype
    assert model.double_blocks[0].img_attn_qkv.weight.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
    assert model.load_report.storage == weight_format


def test_high_precision_layers_stay_in_compute_dtype(golden_dit_config):
    model = hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config=golden_dit_config,
                                          dtype=torch.float32, storage=storage_for("fp8_scaled"))
    fp8 = {n for n, p in model.named_parameters() if p.dtype == torch.float8_e4m3fn}
    assert fp8 and all(n.startswith(("double_blocks.", "single_blocks.")) and n.endswith(".weight") for n in fp8)
    for name in ("img_in.proj.weight", "txt_in.input_embedder.weight", "time_in.mlp.0.weight",
                 "vector_in.in_layer.weight", "guidance_in.mlp.0.weight", "final_layer.linear.weight",
                 "txt_in.individual_token_refiner.blocks.0.self_attn_qkv.weight",
                 "double_blocks.0.img_attn_qkv.bias", "double_blocks.0.img_attn_q_norm.weight"):
        assert model.get_parameter(name).dtype == torch.float32, name
    # every 2-D block Linear weight is fp8: 2 double x 10 + 2 single x 3
    assert len(fp8) == 2 * 10 + 2 * 3


def test_unknown_weight_format_is_named():
    with pytest.raises(InvalidInputError, match="fp4"):
        storage_for("fp4")
