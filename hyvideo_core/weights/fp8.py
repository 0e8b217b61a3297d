"""fp8 weights: per-tensor scaled float8 storage and the layer codec that computes with it.

A quantised layer keeps `weight` as float8 (e4m3fn or e5m2) and a float32 `scale_weight` buffer
(a scalar, or one value per output row) with  weight_fp32 = weight.float() * scale_weight.
Unscaled ("plain") fp8 files simply have scale 1. Files that carry a `scale_input` (Comfy-Org
fp8_scaled) keep it as a buffer too: the fast path quantises activations with it.

Compute (the `codec` protocol of model/ops.py):
- `decode`: dequantise to float32 on the input's device, then cast to the input's dtype. Doing the
  multiply in float32 keeps `decode` equal to `dequantize(...).to(dtype)` and avoids rounding
  the scale to bf16; the float32 temporary is one layer, counted by the memory planner.
- `linear` (only when the fast path is enabled): `torch._scaled_mm` on CUDA devices of compute
  capability >= 8.9 (Ada, Hopper) for e4m3fn weights whose dims are multiples of 16; anything
  else falls back to decode + F.linear. `select_path` makes that choice and is testable anywhere.
- `dequantize` / `store`: a LoRA merge dequantises, merges in float32 and stores back with a
  fresh per-tensor scale.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FAST_PATH_CAPABILITY = (8, 9)


def fp8_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def quantize(weight: torch.Tensor, dtype: torch.dtype, scaled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 tensor, float32 scalar scale) with weight ~= q.float() * scale.

    scaled: scale = max|w| / fp8_max, so the largest weight maps to the top of the fp8 range
    (small weights keep their mantissa bits instead of falling into fp8 subnormals). Unscaled:
    scale 1 and a plain saturating cast, as ComfyUI's `weight_dtype=fp8_e4m3fn`.
    """
    w = weight.to(torch.float32, copy=True)  # our own copy: scaled and clamped in place
    top = fp8_max(dtype)
    scale = torch.ones((), dtype=torch.float32, device=w.device)
    if scaled and w.numel():
        amax = torch.maximum(w.amax(), w.amin().neg())
        scale = torch.where(amax > 0, amax / top, scale)
        w.div_(scale)
    return w.clamp_(-top, top).to(dtype), scale


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 values of an fp8 tensor with a scalar or per-output-row scale."""
    s = scale.float()
    if s.numel() > 1:
        s = s.reshape(-1, *([1] * (q.ndim - 1)))
    return q.float() * s


class Fp8Codec:
    """The codec of an fp8 layer (shared by all fp8 layers of a model; state lives in the layer)."""

    can_store = True  # LoRA merges: dequantize -> add in float32 -> store with a fresh scale

    def __init__(self, fast: bool = False, capability=None):
        self.fast = fast
        # device -> (major, minor) | None; injectable so dispatch is testable without a GPU.
        self._capability = capability or _cuda_capability
        self._warned = False
        if fast:
            self.linear = self._linear  # ops.Linear calls codec.linear only when it exists

    # -- codec protocol ---------------------------------------------------------------------
    def decode(self, layer: nn.Module, x: torch.Tensor):
        weight = dequantize_tensor(_on(layer.weight, x), _on(layer.scale_weight, x)).to(x.dtype)
        return weight, _cast(layer.bias, x)

    def dequantize(self, layer: nn.Module) -> torch.Tensor:
        return dequantize_tensor(layer.weight, layer.scale_weight)

    def store(self, layer: nn.Module, weight_fp32: torch.Tensor) -> None:
        if tuple(weight_fp32.shape) != tuple(layer.weight.shape):
            raise InvalidInputError(
                f"fp8 store: new weight has shape {list(weight_fp32.shape)}, the layer holds "
                f"{list(layer.weight.shape)}.")
        device = layer.weight.device
        q, scale = quantize(weight_fp32.to(device), layer.weight.dtype, scaled=True)
        layer.weight.data = q
        layer._buffers["scale_weight"] = scale

    # -- fast path --------------------------------------------------------------------------
    def select_path(self, layer: nn.Module, device: torch.device, dtype: torch.dtype,
                    capability: tuple[int, int] | None = None) -> str:
        """'scaled_mm' or 'dequantize' for an input of this device/dtype."""
        if not self.fast or device.type != "cuda":
            return "dequantize"
        capability = capability if capability is not None else self._capability(device)
        if capability is None or tuple(capability) < FAST_PATH_CAPABILITY:
            return "dequantize"
        if layer.weight.dtype != torch.float8_e4m3fn or dtype not in (torch.bfloat16, torch.float16):
            return "dequantize"
        if layer.in_features % 16 or layer.out_features % 16 or layer.scale_weight.numel() != 1:
            return "dequantize"
        return "scaled_mm"

    def _linear(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.select_path(layer, x.device, x.dtype) == "scaled_mm":
            return scaled_mm_linear(layer, x)
        if not self._warned and x.device.type == "cuda":
            log.info("fp8 fast path not used for %s inputs on %s (needs CUDA capability >= 8.9, e4m3fn "
                     "weights and bf16/fp16 compute); dequantising instead.", x.dtype, x.device)
            self._warned = True
        weight, bias = self.decode(layer, x)
        return F.linear(x, weight, bias)


def scaled_mm_linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """y = x @ W^T + b with fp8 operands (torch._scaled_mm), per-tensor scales.

    The input is quantised with the layer's `scale_input` when the file provides one, else with a
    dynamic per-tensor scale (max|x| / 448)."""
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    top = fp8_max(torch.float8_e4m3fn)
    scale_in = getattr(layer, "scale_input", None)
    if scale_in is None:
        amax = rows.abs().amax().float()
        scale_in = torch.where(amax > 0, amax / top, torch.ones_like(amax))
    scale_in = scale_in.to(device=x.device, dtype=torch.float32).reshape(())
    x8 = (rows.float() / scale_in).clamp(-top, top).to(torch.float8_e4m3fn)
    w8 = _on(layer.weight, x)
    scale_w = _on(layer.scale_weight, x).float().reshape(())
    bias = _cast(layer.bias, x)
    y = torch._scaled_mm(x8, w8.t(), scale_a=scale_in, scale_b=scale_w, bias=bias, out_dtype=x.dtype)
    return y.reshape(*shape[:-1], y.shape[-1])


def install_fp8(layer: nn.Module, q: torch.Tensor, scale: torch.Tensor, codec: Fp8Codec,
                scale_input: torch.Tensor | None = None) -> None:
    """Make `layer` an fp8 layer holding `q` and `scale` (persistent buffers: they are saved
    with the state dict under Comfy's names and move with `layer.to()`)."""
    layer._parameters["weight"] = nn.Parameter(q, requires_grad=False)
    layer.register_buffer("scale_weight", scale.float(), persistent=True)
    if scale_input is not None:
        layer.register_buffer("scale_input", scale_input.float(), persistent=True)
    layer.codec = codec


def _on(tensor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.device == x.device else tensor.to(x.device, non_blocking=True)


def _cast(tensor: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    if tensor is None or (tensor.dtype == x.dtype and tensor.device == x.device):
        return tensor
    return tensor.to(device=x.device, dtype=x.dtype, non_blocking=True)


def _cuda_capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)
