"""How the text towers store their weights: compute dtype, or fp8 for the Llama linears.

fp8 storage halves the 15 GB fp16 Llama to ~8 GB. The bytes stay fp8 in memory and on the
device; each linear layer dequantises its weight for the input at forward time
(`weight * scale_weight`, ComfyUI's scaled-fp8 convention), through the casting `ops.Linear`
of the DiT and the DiT's fp8 codec (weights/fp8.py), so no full-precision copy exists.
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
