"""Unmerged LoRA: a runtime low-rank adapter added to a layer's output (ops `adapters` hook).

Used where the stored weight cannot be rewritten (GGUF) and when strengths should change without
touching any weight. A and B are non-persistent buffers: they move with the layer (block
swapping) and never appear in `state_dict()`. The strength is a plain float, so changing it
touches no tensor.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.ops import Conv3d, cast_to
from .formats import ModuleLora


class LoraAdapter(nn.Module):
    def __init__(self, lora_name: str, patch: ModuleLora, layer: nn.Module, multiplier: float,
                 dtype: torch.dtype):
        super().__init__()
        self.lora_name = lora_name
        self.multiplier = float(multiplier)
        device = layer.weight.device
        self.is_conv = isinstance(layer, Conv3d)
        if self.is_conv:
            self.conv_args = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
        self.out_features = layer.out_channels if self.is_conv else layer.out_features
        self.scales = [p.scale for p in patch.parts]
        self.offsets = [p.row_offset for p in patch.parts]
        self.rows = [p.rows for p in patch.parts]
        for i, part in enumerate(patch.parts):
            self.register_buffer(f"down{i}", part.down.to(device=device, dtype=dtype), persistent=False)
            self.register_buffer(f"up{i}", part.up.to(device=device, dtype=dtype), persistent=False)

    def extra_repr(self) -> str:
        return f"lora={self.lora_name!r}, parts={len(self.scales)}, multiplier={self.multiplier}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = [self._part(x, i) for i in range(len(self.scales))]
        return self._assemble(pieces, x)

    def _part(self, x: torch.Tensor, i: int) -> torch.Tensor:
        down, up = cast_to(getattr(self, f"down{i}"), x), cast_to(getattr(self, f"up{i}"), x)
        factor = self.scales[i] * self.multiplier
        if self.is_conv:
            return F.conv3d(F.conv3d(x, down, **self.conv_args), up) * factor
        return F.linear(F.linear(x, down), up) * factor

    def _assemble(self, pieces: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        axis = 1 if self.is_conv else -1
        order = sorted(range(len(pieces)), key=self.offsets.__getitem__)
        edges = [(self.offsets[i], self.offsets[i] + self.rows[i]) for i in order]
        contiguous = edges[0][0] == 0 and edges[-1][1] == self.out_features and all(
            a[1] == b[0] for a, b in zip(edges, edges[1:]))
        if contiguous:  # full q/k/v(/mlp) sets and single parts: no zero-filled temporary
            return pieces[order[0]] if len(order) == 1 else torch.cat([pieces[i] for i in order], dim=axis)
        shape = list(pieces[0].shape)
        shape[axis] = self.out_features
        out = pieces[0].new_zeros(shape)
        for i in order:
            out.narrow(axis, self.offsets[i], self.rows[i]).add_(pieces[i])
        return out


def layer_adapters(layer: nn.Module) -> list[nn.Module]:
    found = layer._modules.get("adapters")
    return list(found) if found is not None else []


def set_layer_adapters(layer: nn.Module, adapters: list[nn.Module]) -> None:
    """Install the adapters as the `adapters` submodule (so `.to()` and block swapping move them)."""
    layer._modules.pop("adapters", None)
    if adapters:
        layer.adapters = nn.ModuleList(adapters)
