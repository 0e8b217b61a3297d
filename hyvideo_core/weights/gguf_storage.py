"""Keep a GGUF file's quantised weights as bytes and dequantise them inside each layer's forward.

A quantised layer holds `weight` as a uint8 parameter (the raw GGML blocks, so `layer.to()` and
block swapping move the compact bytes) and a per-layer `GgufCodec` that knows the quant type and
the logical shape. Unquantised tensors (F32/F16/BF16: biases, norms, embedders, final layer) are
stored in the compute dtype like any plain tensor.
NaN/inf is checked as each tensor streams in: plain tensors by value, quantised ones by their
blocks' fp16 scales (the only fields of a block that can be non-finite).
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from ..errors import CheckpointError, InvalidInputError
from ..runtime.placement import module_bytes
from .dit_format import DiTLayout
from .gguf import GGUFSource
from .gguf_dequant import check_supported, dequantize
from .lazy import owned, release_pages
from .reader import check_finite
from .storage_common import StorageReport, assign

log = logging.getLogger(__name__)

_PLAIN = (Q.F32, Q.F16, Q.BF16)
# Byte offsets of the fp16 super-scales (d, and dmin where there is one) inside each block
# (ggml-quants.h). The other block fields are small integers, so a block dequantises to finite
# values exactly when these scales are finite: checking them is the NaN/inf check of a quantised
# tensor, at 2-4 bytes read per block instead of a dequantisation.
_SCALE_OFFSETS = {Q.Q8_0: (0,), Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q2_K: (80, 82),
                  Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


class GgufCodec:
    """Codec of one GGUF-quantised layer."""

    can_store = False  # merging needs unmerged adapters (re-quantising to K-quants is not offered)

    def __init__(self, qtype: Q, shape: tuple[int, ...]):
        self.qtype = qtype
        self.shape = tuple(shape)

    def decode(self, layer: nn.Module, x: torch.Tensor):
        raw = layer.weight if layer.weight.device == x.device else layer.weight.to(x.device, non_blocking=True)
        weight = dequantize(raw, self.qtype, self.shape).to(x.dtype)
        bias = layer.bias
        if bias is not None and (bias.dtype != x.dtype or bias.device != x.device):
            bias = bias.to(device=x.device, dtype=x.dtype, non_blocking=True)
        return weight, bias

    def dequantize(self, layer: nn.Module) -> torch.Tensor:
        return dequantize(layer.weight, self.qtype, self.shape)

    def store(self, layer: nn.Module, weight_fp32: torch.Tensor) -> None:
        raise InvalidInputError(
            f"GGUF {self.qtype.name} weights cannot be rewritten in place (merging a LoRA would need "
            "re-quantisation to a K-quant). Apply the LoRA unmerged (runtime adapters) instead.")

    def __repr__(self) -> str:
        return f"GgufCodec({self.qtype.name}, {list(self.shape)})"


class GgufStorage:
    """Quantised GGUF tensors stay quantised; F32/F16/BF16 tensors are stored in the compute dtype."""

    name = "gguf"

    def default_dtype(self, layout: DiTLayout, source) -> torch.dtype:
        return torch.bfloat16

    def load(self, model: nn.Module, layout: DiTLayout, source, dtype, device) -> None:
        if not isinstance(source, GGUFSource):
            raise InvalidInputError(
                f"weight_format='gguf' needs a .gguf file, but {source.name} is not one. Choose "
                "'auto', 'bf16' or an fp8 format for it, or pick a GGUF file.")
        device = torch.device(device)
        self._check_types(layout, source)
        self.report = StorageReport(self.name)
        for key, recipe in layout.recipes.items():
            (source_key,) = recipe.sources  # GGUF files use official names: one source per tensor
            qtype = source.qtype(source_key)
            if qtype in _PLAIN:
                tensor = source.get(source_key)
                check_finite(tensor, source_key, source.name)
                assign(model, key, owned(tensor, device, dtype if tensor.is_floating_point() else tensor.dtype))
                self.report.plain += 1
            else:
                raw = source.raw(source_key)
                _check_scales(raw, source_key, source.name)
                self._install(model, key, raw, device)
                tensor = raw.data
                self.report.kept += 1
            release_pages(tensor)
        self.report.stored_bytes = module_bytes(model)
        log.info("%s: %s", source.name, self.report.summary())

    def _install(self, model, key, raw, device) -> None:
        module_name, leaf = key.rsplit(".", 1)
        layer = model.get_submodule(module_name)
        if leaf != "weight" or not hasattr(layer, "codec"):
            raise CheckpointError(
                f"tensor '{key}' is stored as {raw.qtype.name}, but only Linear/Conv weights can stay "
                "quantised. The file was not made by a HunyuanVideo GGUF converter.")
        layer._parameters["weight"] = nn.Parameter(owned(raw.data, device), requires_grad=False)
        layer.codec = GgufCodec(raw.qtype, raw.shape)

    @staticmethod
    def _check_types(layout: DiTLayout, source: GGUFSource) -> None:
        for key, recipe in layout.recipes.items():
            check_supported(source.qtype(recipe.sources[0]), f"{source.name}: tensor '{key}'")


def _check_scales(raw, key: str, source_name: str) -> None:
    """NaN/inf in a quantised tensor: its blocks' fp16 scales (see _SCALE_OFFSETS)."""
    offsets = _SCALE_OFFSETS.get(raw.qtype)
    if offsets is None or raw.data.numel() == 0:
        return
    blocks = raw.data.reshape(-1, GGML_QUANT_SIZES[raw.qtype][1])
    for offset in offsets:
        scales = blocks[:, offset:offset + 2].contiguous().view(torch.float16)
        check_finite(scales, f"{key} ({raw.qtype.name} block scales)", source_name)
