"""The operations object: the layers the DiT is built from.

Every layer computes in the dtype/device of its input and casts its stored weights to it, so
the storage format is a policy plugged in from outside, not a concern of the model code:

- `codec`: how the stored `weight` bytes become a compute tensor (fp8 with scale, GGUF quants;
  see hyvideo_core.weights). None means a plain tensor, cast if needed.
- `adapters`: an optional nn.ModuleList registered on the layer, of runtime low-rank deltas
  added to the output (unmerged LoRA); each is a module `adapter(x) -> delta`.

The stored tensors stay module parameters/buffers, so `module.to(device)` (block swapping)
moves exactly the stored bytes. Never call `model.to(dtype)` on a model holding fp8/GGUF
weights: it would cast the stored bytes.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F


def _cpu_half_matmul_is_emulated() -> bool:
    """Without AVX512-BF16 or AMX, CPU bf16/fp16 GEMMs are emulated and several times slower
    than float32 ones (measured ~4x on an AVX512 CPU without BF16)."""
    native = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return not any(getattr(torch.cpu, name, lambda: False)() for name in native)


CPU_HALF_MATMUL_EMULATED = _cpu_half_matmul_is_emulated()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear, with half-precision GEMMs on such CPUs done as float32 GEMMs and one final
    rounding: what the emulated kernel computes, only faster."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and CPU_HALF_MATMUL_EMULATED:
        return F.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)
    return F.linear(x, weight, bias)


def cast_to(tensor: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if tensor is None or (tensor.dtype == like.dtype and tensor.device == like.device):
        return tensor
    return tensor.to(device=like.device, dtype=like.dtype, non_blocking=True)


class CastWeights:
    """Mixin: decode/cast the stored weight and bias for the input `x`."""

    codec = None

    def compute_weight(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.codec is not None:
            return self.codec.decode(self, x)
        return cast_to(self.weight, x), cast_to(self.bias, x)

    def add_adapters(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum the runtime adapters (an nn.ModuleList registered as `layer.adapters`) into y."""
        adapters = self._modules.get("adapters")
        if adapters:
            for adapter in adapters:
                y = y + adapter(x)
        return y


class Linear(CastWeights, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.codec is not None and hasattr(self.codec, "linear"):
            y = self.codec.linear(self, x)  # e.g. an fp8 matmul that never dequantises
        else:
            weight, bias = self.compute_weight(x)
            y = linear(x, weight, bias)
        return self.add_adapters(x, y)


class Conv3d(CastWeights, nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.compute_weight(x)
        y = self._conv_forward(x, weight, bias)
        return self.add_adapters(x, y)


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, cast_to(self.weight, x), cast_to(self.bias, x), self.eps)


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back before the learnable scale (as the reference)."""

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = cast_to(self.weight, x)
        if x.dtype == torch.float32:
            return F.rms_norm(x, weight.shape, weight, self.eps)
        return F.rms_norm(x.float(), weight.shape, eps=self.eps).to(x.dtype) * weight


default_ops = SimpleNamespace(Linear=Linear, Conv3d=Conv3d, LayerNorm=LayerNorm, RMSNorm=RMSNorm)


def casting_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Every Linear/Conv3d of a module (they accept a codec or adapters) by name, in model order."""
    return {name: m for name, m in module.named_modules() if isinstance(m, CastWeights)}
