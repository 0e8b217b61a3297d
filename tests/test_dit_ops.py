"""The casting layers: half-precision GEMM dispatch on CPUs that emulate it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyvideo_core.model import ops


@pytest.mark.parametrize("emulated", [True, False])
def test_half_linear_matches_torch_either_way(monkeypatch, emulated):
    monkeypatch.setattr(ops, "CPU_HALF_MATMUL_EMULATED", emulated)
    torch.manual_seed(0)
    layer = ops.Linear(96, 48).to(torch.bfloat16)
    x = torch.randn(3, 64, 96, dtype=torch.bfloat16)
    expected = F.linear(x.float(), layer.weight.float(), layer.bias.float())
    out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)


def test_emulated_path_computes_in_float32(monkeypatch):
    monkeypatch.setattr(ops, "CPU_HALF_MATMUL_EMULATED", True)
    seen = []
    real = F.linear
    monkeypatch.setattr(ops.F, "linear", lambda x, w, b=None: seen.append((x.dtype, w.dtype)) or real(x, w, b))
    ops.Linear(8, 4).to(torch.bfloat16)(torch.randn(2, 8, dtype=torch.bfloat16))
    assert seen == [(torch.float32, torch.float32)]


def test_float32_path_is_plain_linear(monkeypatch):
    monkeypatch.setattr(ops, "CPU_HALF_MATMUL_EMULATED", True)
    layer = ops.Linear(8, 4)
    x = torch.randn(2, 8)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
