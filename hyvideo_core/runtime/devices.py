"""The two devices of a run: `main` (computes; a GPU in real use) and `offload` (host RAM).

Nothing here touches CUDA unless CUDA is available and the device asks for it, so every helper
is safe on a CPU-only machine.
"""
from __future__ import annotations

import gc

import logging

import torch

from ..errors import InvalidInputError

log = logging.getLogger(__name__)


def main_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> the first CUDA device if there is one, else MPS, else the CPU."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"device={name!r} is not a device name (try 'auto', 'cuda', 'cuda:1', 'cpu').") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device={name!r}: CUDA is not available in this torch build or machine; use 'cpu'.")
        if device.index is None:  # tensors report 'cuda:N'; compare like with like
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def capability(device: torch.device) -> tuple[int, int] | None:
    return torch.cuda.get_device_capability(device) if is_cuda(device) else None


def free_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (CUDA: what the driver reports, plus this process's cached
    but unused blocks; CPU: available RAM). None when unknown."""
    if is_cuda(device):
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            import psutil
            return int(psutil.virtual_memory().available)
        except ImportError:
            return None
    return None


def total_bytes(device: torch.device) -> int | None:
    if is_cuda(device):
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type == "cpu":
        try:
            import psutil
            return int(psutil.virtual_memory().total)
        except ImportError:
            return None
    return None


_pin_failed = False


def pin(tensor: torch.Tensor) -> torch.Tensor:
    """Page-locked copy of a CPU tensor (only when CUDA exists to use it); otherwise itself.

    If the OS refuses to lock more memory, the tensor stays pageable (copies then cannot overlap
    compute) and a warning says so once."""
    global _pin_failed
    if _pin_failed or tensor.device.type != "cpu" or not torch.cuda.is_available() or tensor.is_pinned():
        return tensor
    try:
        return tensor.pin_memory()
    except RuntimeError as exc:
        _pin_failed = True
        log.warning("Could not pin host memory for block swapping (%s); continuing with pageable "
                    "memory, so weight copies will not overlap compute.", str(exc).splitlines()[0])
        return tensor


def is_out_of_memory(exc: BaseException) -> bool:
    """A device out-of-memory (CUDA or other), a failed CPU allocation, or a MemoryError."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if isinstance(exc, (MemoryError, *oom_types)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        m in text for m in ("out of memory", "can't allocate memory", "not enough memory"))


def release_memory(device: torch.device | str) -> None:
    """Collect dropped tensors and hand cached CUDA blocks back (a no-op for the CPU's allocator)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
