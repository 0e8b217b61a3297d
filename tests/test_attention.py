"""Attention backends: dispatch, load-time failures, and exact varlen packing (CPU stand-in)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hyvideo_core
from conftest import golden_path, golden_tensors
from hyvideo_core.errors import MissingPackageError
from hyvideo_core.model.attention import SDPA, TokenLayout, Varlen, resolve_backend


def torch_varlen(q, k, v, cu_q, cu_k, max_q, max_k) -> torch.Tensor:
    """Stand-in varlen kernel in plain PyTorch: exact, slow; tests the packing on CPU."""
    out = torch.empty_like(q)
    for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        seg = [t[start:end].transpose(0, 1) for t in (q, k, v)]
        out[start:end] = F.scaled_dot_product_attention(*seg).transpose(0, 1)
    return out


def test_cpu_auto_is_sdpa():
    assert isinstance(resolve_backend("auto", "cpu"), SDPA)


def test_cuda_dispatch_picks_varlen_kernel_when_given():
    backend = resolve_backend("flash", "cuda", kernel=torch_varlen)
    assert isinstance(backend, Varlen) and backend.name == "flash"
    assert resolve_backend("auto", "cuda", kernel=torch_varlen).name == "sage"


@pytest.mark.parametrize("name,package", [("flash", "flash-attn"), ("sage", "sageattention")])
def test_missing_package_named(name, package):
    with pytest.raises(MissingPackageError, match=package):
        resolve_backend(name, "cuda")


def test_cuda_auto_without_packages_falls_back_to_sdpa():
    assert isinstance(resolve_backend("auto", "cuda"), SDPA)


def test_packing_cu_seqlens():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    layout = TokenLayout.build(4, mask)
    index, cu, max_len = layout.packing(2, 7, "cpu")
    assert cu.tolist() == [0, 7, 12] and max_len == 7
    assert index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_varlen_equals_sdpa_on_real_tokens():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 9, 2, 8) for _ in range(3))
    layout = TokenLayout.build(5, torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    dense = SDPA()(q, k, v, layout)
    packed = Varlen("flash", torch_varlen, needs_half=False)(q, k, v, layout)
    real = layout.key_mask
    torch.testing.assert_close(packed[real], dense[real], atol=1e-6, rtol=0)
    assert packed[~real].abs().max() == 0


@pytest.mark.parametrize("name", ["b2_t3_h8_w12_pad", "b1_t1_h16_w16_image"])
def test_model_with_varlen_backend_matches_golden(name):
    model = hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config="tiny", dtype=torch.float32)
    model.attention = Varlen("flash", torch_varlen, needs_half=False)
    case = golden_tensors("dit", "cases", f"{name}.safetensors")
    with torch.no_grad():
        out = model(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])
    torch.testing.assert_close(out, case["output"], atol=1e-4, rtol=1e-4)
