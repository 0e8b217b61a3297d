"""Run a text tower on the main device, then give the memory back.

The towers live on the offload device (CPU). For an encode call their tensors are copied to
the main device and, afterwards, the module points at its original offload tensors again:
weights never change, so nothing is copied back and the device copies are simply freed.
On a machine where main and offload are the same device this does nothing.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from ..errors import OutOfMemoryError
from ..runtime.devices import release_memory


def same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":  # "cuda" and "cuda:0" are the same device when 0 is current
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index


def _slots(module: nn.Module):
    """(owner, kind, name, tensor) for every parameter and buffer, each listed once."""
    for owner in module.modules():
        for name, tensor in owner._parameters.items():
            if tensor is not None:
                yield owner, "_parameters", name, tensor
        for name, tensor in owner._buffers.items():
            if tensor is not None:
                yield owner, "_buffers", name, tensor


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for *_, t in _slots(module))


@contextlib.contextmanager
def on_device(module: nn.Module, device: torch.device, what: str = "text encoder"):
    """Temporarily place `module`'s tensors on `device` (no-op when they are already there)."""
    device = torch.device(device)
    originals = [slot for slot in _slots(module) if not same_device(slot[3].device, device)]
    if not originals:
        yield module
        return
    try:
        for owner, kind, name, tensor in originals:
            moved = tensor.to(device, non_blocking=tensor.is_pinned())
            getattr(owner, kind)[name] = nn.Parameter(moved, requires_grad=False) if kind == "_parameters" else moved
        yield module
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(
            f"{what}: out of memory on {device} ({module_bytes(module) / 2**30:.1f} GiB of weights). "
            "Store the Llama in fp8 (llm_storage='fp8_e4m3fn'), or run the text encoder on the CPU "
            "(device='cpu'), or free the GPU first.",
            suggestion={"llm_storage": "fp8_e4m3fn"}) from exc
    finally:
        for owner, kind, name, tensor in originals:
            getattr(owner, kind)[name] = tensor
        release_memory(device)
