"""How the text towers store their weights: compute dtype, or fp8 for the Llama linears.

fp8 storage halves the 15 GB fp16 Llama to ~8 GB. The bytes stay fp8 in memory and on the
device; each linear layer dequantises its weight for the input at forward time
(`weight.to(dtype) * scale_weight`, ComfyUI's scaled-fp8 convention), through the casting
`ops.Linear` of the DiT and a small codec, so no full-precision copy of the model exists.
Embeddings and norms always stay in the compute dtype.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ..model import ops

FP8_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
STORAGE_CHOICES = ("auto", "compute", *FP8_DTYPES)
_FP8_SET = set(FP8_DTYPES.values())


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in _FP8_SET


def resolve_storage(storage: str) -> str:
    if storage not in STORAGE_CHOICES:
        raise InvalidInputError(
            f"llm_storage: {storage!r} is not one of {list(STORAGE_CHOICES)} ('auto' keeps an fp8 "
            "file in fp8 and anything else in the compute dtype).")
    return storage


def fp8_storage_dtype(storage: str, file_dtype: torch.dtype) -> torch.dtype | None:
    """The fp8 dtype the Llama linears are kept in, or None for the compute dtype."""
    if storage == "auto":
        return file_dtype if is_fp8(file_dtype) else None
    return FP8_DTYPES.get(storage)


def quantize_fp8(weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled fp8 (absmax maps to the format's largest finite value).

    A plain cast would turn values beyond the fp8 range into NaN and waste the range below.
    """
    w = weight.float()
    amax = w.abs().amax()
    scale = (amax / torch.finfo(dtype).max).clamp(min=torch.finfo(torch.float32).tiny)
    return (w / scale).to(dtype), scale.reshape(())


def broadcastable_scale(scale: torch.Tensor, out_features: int) -> torch.Tensor:
    """A scalar stays a scalar; a per-output-channel vector becomes [out, 1]."""
    scale = scale.to(torch.float32)
    if scale.numel() > 1 and scale.ndim == 1 and scale.numel() == out_features:
        return scale.reshape(out_features, 1)
    return scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    w = weight.to(torch.float32)
    if scale is not None:
        w = w * scale.to(device=w.device, dtype=torch.float32)
    return w.to(dtype)


class ScaledFp8Codec:
    """Codec (see CONTRIBUTING.md) for a layer holding fp8 `weight` and a `scale_weight` buffer."""

    def decode(self, layer: nn.Module, x: torch.Tensor):
        weight = layer.weight.to(device=x.device, dtype=x.dtype)
        weight = weight * layer.scale_weight.to(device=x.device, dtype=x.dtype)
        return weight, ops.cast_to(layer.bias, x)

    def dequantize(self, layer: nn.Module) -> torch.Tensor:
        return dequantize(layer.weight, layer.scale_weight, torch.float32)

    def store(self, layer: nn.Module, weight: torch.Tensor) -> None:
        q, scale = quantize_fp8(weight, layer.weight.dtype)
        layer.weight = nn.Parameter(q.to(layer.weight.device), requires_grad=False)
        layer.scale_weight = scale.to(layer.scale_weight.device)


SCALED_FP8 = ScaledFp8Codec()


def use_casting_linears(module: nn.Module) -> list[str]:
    """Replace every nn.Linear below `module` by an (empty, meta) ops.Linear of the same shape.

    Call on a model built on the meta device, before its weights are assigned. Returns the
    qualified names of the replaced layers.
    """
    replaced = []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if type(sub) is nn.Linear:
                new = ops.Linear(sub.in_features, sub.out_features, bias=sub.bias is not None, device="meta")
                setattr(child, attr, new)
                replaced.append(f"{name}.{attr}" if name else attr)
    return replaced


def attach_scale(layer: nn.Module, scale: torch.Tensor) -> None:
    """Give an fp8 layer its scale (a buffer, so it moves with the layer) and the codec."""
    layer.register_buffer("scale_weight", broadcastable_scale(scale, layer.weight.shape[0]), persistent=True)
    layer.codec = SCALED_FP8
