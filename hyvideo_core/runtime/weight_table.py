"""Bytes of every stored weight tensor, grouped by swappable unit, for the memory planner.

Units are `img_in`, `txt_in`, `double_blocks.<i>`, `single_blocks.<i>` and `other` (time_in,
vector_in, guidance_in, final_layer). A table comes either from a config + weight format (the
13B is built on the meta device and each tensor is priced by the storage policy's rule), or from
a loaded model (exact: whatever tensors its modules really hold, LoRA adapters included).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ..model.config import DiTConfig
from ..weights.quantised_layers import is_quantisable

PLAIN = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FP8 = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2, "fp8_scaled": torch.float8_e4m3fn}


@dataclass(frozen=True)
class WeightTable:
    units: dict[str, tuple[int, ...]]              # unit -> byte size of each stored tensor
    largest_quantised: tuple[int, str]             # (numel, kind) of the biggest decoded weight

    def unit_bytes(self, unit: str) -> int:
        return sum(self.units.get(unit, ()))

    def total(self) -> int:
        return sum(sum(v) for v in self.units.values())


def unit_of(key: str) -> str:
    head = key.split(".", 2)
    if head[0] in ("double_blocks", "single_blocks"):
        return f"{head[0]}.{head[1]}"
    return head[0] if head[0] in ("img_in", "txt_in") else "other"


def compute_dtype_for(weight_format: str) -> torch.dtype:
    return PLAIN.get(weight_format, torch.bfloat16)


def format_rule(weight_format: str):
    """(key, shape, compute dtype) -> (byte sizes of the stored tensors, decode kind)."""
    if weight_format in PLAIN:
        dtype = PLAIN[weight_format]
        return lambda key, shape, compute: ((_numel(shape) * dtype.itemsize,),
                                            "none" if dtype == compute else "cast")
    if weight_format in FP8:
        def fp8(key, shape, compute):
            if is_quantisable(key, shape):
                return (_numel(shape), 4), "fp8"   # fp8 bytes + float32 scale_weight
            return (_numel(shape) * compute.itemsize,), "none"
        return fp8
    from gguf import GGMLQuantizationType
    qtype = getattr(GGMLQuantizationType, weight_format.upper(), None)
    if qtype is None:
        raise InvalidInputError(
            f"planner: weight format {weight_format!r} is unknown; use one of {sorted(PLAIN) + sorted(FP8)} "
            "or a GGUF quant type such as Q8_0, Q6_K, Q5_K, Q4_K.")
    from ..weights.gguf_dequant import check_supported, stored_bytes
    check_supported(qtype, "planner")
    kind = "gguf_scale" if qtype.name in ("Q8_0", "Q4_0", "Q5_0") else "gguf_affine"

    def gguf(key, shape, compute):
        if is_quantisable(key, shape):
            return (stored_bytes(qtype, shape),), kind
        return (_numel(shape) * compute.itemsize,), "none"
    return gguf


def table_for_format(config: DiTConfig, weight_format: str, compute: torch.dtype) -> WeightTable:
    rule = format_rule(weight_format)
    units: dict[str, list[int]] = {}
    largest = (0, "none")
    for key, shape in _official_shapes(config):
        sizes, kind = rule(key, shape, compute)
        units.setdefault(unit_of(key), []).extend(sizes)
        if kind != "none" and _numel(shape) > largest[0]:
            largest = (_numel(shape), kind)
    return WeightTable({u: tuple(v) for u, v in units.items()}, largest)


def table_for_model(model: nn.Module) -> WeightTable:
    """Exact sizes of what a loaded model holds (params and buffers, adapters included)."""
    from ..weights.fp8 import Fp8Codec
    units: dict[str, list[int]] = {}
    largest = (0, "none")
    for name, module in model.named_modules():
        unit = unit_of(name + ".x") if name else "other"
        for t in [*module._parameters.values(), *module._buffers.values()]:
            if t is not None:
                units.setdefault(unit, []).append(t.numel() * t.element_size())
        codec = getattr(module, "codec", None)
        if codec is not None:
            numel = module.weight.numel() if isinstance(codec, Fp8Codec) else _numel(codec.shape)
            kind = "fp8" if isinstance(codec, Fp8Codec) else (
                "gguf_scale" if codec.qtype.name in ("Q8_0", "Q4_0", "Q5_0") else "gguf_affine")
            if numel > largest[0]:
                largest = (numel, kind)
    return WeightTable({u: tuple(v) for u, v in units.items()}, largest)


@lru_cache(maxsize=8)
def _official_shapes(config: DiTConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from ..model.transformer import HunyuanVideoTransformer
    with torch.device("meta"):
        model = HunyuanVideoTransformer(config)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
