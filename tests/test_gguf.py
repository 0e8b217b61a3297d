"""GGUF: torch dequant kernels equal gguf.quants.dequantize; files written with gguf.GGUFWriter load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, GGUFWriter, quants

import hyvideo_core
from conftest import golden_path, golden_tensors
from hyvideo_core.errors import CheckpointError, InvalidInputError
from hyvideo_core.weights.gguf_dequant import SUPPORTED, dequantize
from hyvideo_core.weights.gguf_storage import GgufCodec
from gguf_write import write_gguf
from hyvideo_core.weights.quantised_layers import is_quantisable
from hyvideo_core.weights.storage import storage_for

QUANTS = [q for q in SUPPORTED if q not in (Q.F32, Q.F16, Q.BF16)]
# Offsets of the fp16 scale fields in each block, so random blocks get finite scales.
_F16_FIELDS = {Q.Q8_0: (0,), Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2),
               Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def random_blocks(qtype: Q, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random raw bytes [rows, bytes per row] of a valid `qtype` tensor (finite scales)."""
    block, size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    for offset in _F16_FIELDS.get(qtype, ()):
        scale = rng.uniform(-0.01, 0.01, size=raw.shape[0]).astype(np.float16)
        raw[:, offset:offset + 2] = scale.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, cols // block * size)


@pytest.mark.parametrize("qtype", QUANTS + [Q.BF16, Q.F16], ids=lambda q: q.name)
def test_torch_kernel_equals_gguf_dequantize(qtype):
    block = GGML_QUANT_SIZES[qtype][0]
    cols = 2 * max(block, 256)
    if qtype in (Q.BF16, Q.F16):
        values = np.random.default_rng(1).standard_normal((5, cols)).astype(np.float32)
        raw = (quants.quantize(values, qtype) if qtype == Q.BF16 else values.astype(np.float16)).view(np.uint8)
    else:
        raw = random_blocks(qtype, 5, cols)
    expected = quants.dequantize(raw, qtype)
    ours = dequantize(torch.from_numpy(raw.copy()), qtype, (5, cols))
    assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape
    assert np.array_equal(ours.numpy().view(np.uint32), expected.view(np.uint32))  # bit for bit


@pytest.mark.parametrize("qtype", QUANTS, ids=lambda q: q.name)
def test_quantised_layer_output_equals_dequantise_then_linear(qtype):
    from hyvideo_core.model.ops import Linear
    raw = torch.from_numpy(random_blocks(qtype, 32, 512, seed=3).copy())
    layer = Linear(512, 32)
    layer.weight = torch.nn.Parameter(raw.reshape(-1), requires_grad=False)
    layer.codec = GgufCodec(qtype, (32, 512))
    x = torch.randn(3, 512)
    reference = torch.from_numpy(quants.dequantize(raw.numpy(), qtype))
    assert torch.equal(layer.codec.dequantize(layer), reference)
    assert torch.equal(layer(x), F.linear(x, reference, layer.bias))


def _write(path, tensors: dict, arch="hyvid", extra=None):
    """tensors: name -> float32 array, or (raw uint8 blocks, qtype)."""
    writer = GGUFWriter(str(path), arch=arch)
    for name, value in tensors.items():
        if isinstance(value, tuple):
            writer.add_tensor(name, value[0], raw_dtype=value[1])
        else:
            writer.add_tensor(name, value)
    for key, values in (extra or {}).items():
        writer.add_array(key, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def official(golden_dit_weights):
    return golden_dit_weights


def _run(model, case):
    with torch.no_grad():
        return model(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q5_1, Q.Q5_0, Q.Q4_1, Q.Q4_0], ids=lambda q: q.name)
def test_gguf_file_written_with_gguf_quants_loads_and_matches(official, tmp_path, qtype):
    tensors = {}
    for key, w in official.items():
        values = w.numpy()
        if is_quantisable(key, tuple(w.shape)):
            tensors[key] = (quants.quantize(values, qtype), qtype)
        elif w.ndim == 5:  # city96 stores 5-D tensors flattened + their shape in metadata
            tensors[key] = values.reshape(values.shape[0], -1)
        else:
            tensors[key] = values
    path = _write(tmp_path / f"tiny-{qtype.name}.gguf", tensors,
                  extra={"comfy.gguf.orig_shape.img_in.proj.weight": list(official["img_in.proj.weight"].shape)})
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=storage_for("gguf"))
    assert model.load_report.format == "official" and model.load_report.storage == "gguf"
    for key, value in tensors.items():
        module = model.get_submodule(key.rsplit(".", 1)[0])
        if isinstance(value, tuple):
            assert module.weight.dtype == torch.uint8 and module.codec.qtype == qtype
            assert torch.equal(module.codec.dequantize(module), torch.from_numpy(quants.dequantize(value[0], qtype)))
        else:
            assert torch.equal(model.get_parameter(key), official[key]), key
    assert tuple(model.img_in.proj.weight.shape) == (64, 16, 1, 2, 2)


def test_golden_dit_in_q8_0_stays_close_to_fp32(official, golden_dit, tmp_path):
    path = write_gguf(official, tmp_path / "tiny-Q8_0.gguf", Q.Q8_0)
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=storage_for("auto"))
    case = golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")
    ref, out = _run(golden_dit, case), _run(model, case)
    rel = ((out - ref).norm() / ref.norm()).item()
    print(f"Q8_0: max |err| {(out - ref).abs().max().item():.4f}, relative L2 {rel:.5f}")
    assert rel < 0.005
    assert model.load_report.storage == "auto:gguf"


def test_k_quant_file_loads(official, tmp_path):
    """K-quants cannot be produced by gguf-py; raw Q4_K/Q6_K blocks written by GGUFWriter load exactly."""
    tensors = {k: v.numpy().reshape(v.shape[0], -1) if v.ndim == 5 else v.numpy() for k, v in official.items()}
    big = {"single_blocks.0.linear1.weight": Q.Q4_K, "double_blocks.1.img_mlp.fc1.weight": Q.Q6_K}
    for i, (key, qtype) in enumerate(big.items()):
        rows, cols = official[key].shape
        # the tiny model's rows (64 values) are shorter than a K super-block (256): stored as rows of
        # 256 values with the real shape in comfy.gguf.orig_shape
        raw = random_blocks(qtype, rows * cols // 256, 256, seed=i)
        tensors[key] = (raw, qtype)
    extra = {f"comfy.gguf.orig_shape.{k}": list(official[k].shape) for k in [*big, "img_in.proj.weight"]}
    path = _write(tmp_path / "k.gguf", tensors, extra=extra)
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=storage_for("gguf"))
    for key, qtype in big.items():
        layer = model.get_submodule(key.rsplit(".", 1)[0])
        expected = quants.dequantize(tensors[key][0], qtype).reshape(official[key].shape)
        assert torch.equal(layer.codec.dequantize(layer), torch.from_numpy(expected))
    case = golden_tensors("dit", "cases", "b1_t5_h6_w10_nopad.safetensors")
    assert torch.isfinite(_run(model, case)).all()


def test_plain_storage_of_gguf_dequantises_everything(official, tmp_path):
    path = write_gguf(official, tmp_path / "tiny-Q8_0.gguf", Q.Q8_0)
    model = hyvideo_core.load_transformer(path, config="tiny", storage=storage_for("fp32"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    layer = model.double_blocks[0].img_attn_qkv
    assert layer.codec is None
    torch.testing.assert_close(layer.weight, official["double_blocks.0.img_attn_qkv.weight"], atol=0.02, rtol=0.02)


def test_quantised_gguf_defaults_to_bf16_compute(official, tmp_path):
    path = write_gguf(official, tmp_path / "tiny-Q8_0.gguf", Q.Q8_0)
    model = hyvideo_core.load_transformer(path, config="tiny", storage=storage_for("gguf"))
    assert model.compute_dtype == torch.bfloat16
    assert model.double_blocks[0].img_attn_qkv.bias.dtype == torch.bfloat16


def test_stored_bytes_move_with_the_layer(official, tmp_path):
    path = write_gguf(official, tmp_path / "tiny-Q8_0.gguf", Q.Q8_0)
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=storage_for("gguf"))
    layer = model.single_blocks[0].linear1
    n = layer.weight.numel()
    layer.to("meta")
    assert layer.weight.device.type == "meta" and layer.weight.numel() == n == 448 * 64 // 32 * 34  # Q8_0: 34 bytes / 32 weights


# -- bad input ---------------------------------------------------------------------------------

def test_gguf_of_another_architecture_is_rejected(tmp_path):
    path = _write(tmp_path / "llama.gguf", {"token_embd.weight": np.zeros((8, 32), np.float32)}, arch="llama")
    with pytest.raises(CheckpointError, match="architecture 'llama'.*hyvid"):
        hyvideo_core.load_transformer(path, storage=storage_for("gguf"))


def test_flux_gguf_is_rejected_naming_its_arch(official, tmp_path):
    tensors = {k: v.numpy().reshape(v.shape[0], -1) if v.ndim == 5 else v.numpy() for k, v in official.items()}
    path = _write(tmp_path / "flux.gguf", tensors, arch="flux")
    with pytest.raises(CheckpointError, match="'flux'"):
        hyvideo_core.load_transformer(path)


def test_unsupported_quant_type_is_named(official, tmp_path):
    tensors = {k: v.numpy().reshape(v.shape[0], -1) if v.ndim == 5 else v.numpy() for k, v in official.items()}
    key = "double_blocks.0.img_mlp.fc2.weight"
    rows, cols = official[key].shape
    block, size = GGML_QUANT_SIZES[Q.IQ4_NL]
    tensors[key] = (np.zeros((rows, cols // block * size), np.uint8), Q.IQ4_NL)
    path = _write(tmp_path / "iq.gguf", tensors,
                  extra={"comfy.gguf.orig_shape.img_in.proj.weight": list(official["img_in.proj.weight"].shape)})
    with pytest.raises(CheckpointError, match=r"img_mlp.fc2.*IQ4_NL is not supported"):
        hyvideo_core.load_transformer(path, config="tiny", storage=storage_for("gguf"))


def test_gguf_format_on_a_safetensors_file_is_an_error():
    with pytest.raises(InvalidInputError, match="needs a .gguf file"):
        hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config="tiny", storage=storage_for("gguf"))


def test_gguf_weights_cannot_be_stored(official, tmp_path):
    path = write_gguf(official, tmp_path / "tiny-Q8_0.gguf", Q.Q8_0)
    model = hyvideo_core.load_transformer(path, config="tiny", dtype=torch.float32, storage=storage_for("gguf"))
    layer = model.double_blocks[0].img_attn_qkv
    with pytest.raises(InvalidInputError, match="unmerged"):
        layer.codec.store(layer, layer.codec.dequantize(layer))
