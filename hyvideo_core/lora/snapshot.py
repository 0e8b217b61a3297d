"""Bit-exact copies of the layers LoRAs change, so strengths change and LoRAs come off without
reloading the model.

Before a layer is first changed, its own parameters and buffers (whatever the storage: plain
tensor, fp8 bytes + scale, ...) and its codec are copied to the CPU. Restoring writes them back
in place when shape and dtype still agree, so pinned host memory (block swapping) and anyone
holding the Parameter keep working. Merged layers therefore cost one CPU copy of their stored
bytes; runtime adapters cost nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

_MISSING = object()
_ATTRIBUTES = ("codec", "in_channels")   # plain attributes a merge or a widening may change


@dataclass
class LayerSnapshot:
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    attributes: dict[str, object]

    @classmethod
    def take(cls, layer: nn.Module) -> "LayerSnapshot":
        params = {n: _copy(p) for n, p in layer._parameters.items() if p is not None}
        buffers = {n: _copy(b) for n, b in layer._buffers.items() if b is not None}
        attributes = {a: layer.__dict__.get(a, _MISSING) for a in _ATTRIBUTES}
        return cls(params, buffers, attributes)

    def restore(self, layer: nn.Module) -> None:
        device = _device_of(layer)
        for name in [n for n in layer._parameters if n not in self.params]:
            del layer._parameters[name]
        for name in [n for n in layer._buffers if n not in self.buffers]:
            del layer._buffers[name]
        for name, saved in self.params.items():
            current = layer._parameters.get(name)
            if _same_layout(current, saved):
                current.data.copy_(saved)
            else:
                layer._parameters[name] = nn.Parameter(saved.to(device, copy=True), requires_grad=False)
        for name, saved in self.buffers.items():
            current = layer._buffers.get(name)
            if _same_layout(current, saved):
                current.copy_(saved)
            else:
                layer._buffers[name] = saved.to(device, copy=True)
        for name, value in self.attributes.items():
            if value is _MISSING:
                layer.__dict__.pop(name, None)
            else:
                layer.__dict__[name] = value

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.params.values(), *self.buffers.values()])


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


def _same_layout(current, saved: torch.Tensor) -> bool:
    return current is not None and current.shape == saved.shape and current.dtype == saved.dtype


def _device_of(layer: nn.Module) -> torch.device:
    for t in [*layer._parameters.values(), *layer._buffers.values()]:
        if t is not None:
            return t.device
    return torch.device("cpu")


@dataclass
class LoraState:
    """Attached to a model as `model.lora_state` while LoRAs are applied."""

    base_config: object
    snapshots: dict[str, LayerSnapshot] = field(default_factory=dict)
    specs: list = field(default_factory=list)
    mode: str = "auto"
    adapters: dict[str, list] = field(default_factory=dict)   # module -> its LoraAdapters
    report: object = None

    def snapshot(self, name: str, layer: nn.Module) -> None:
        if name not in self.snapshots:
            self.snapshots[name] = LayerSnapshot.take(layer)
