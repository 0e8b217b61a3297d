"""Where a model's tensors live: the one placement mechanism for every component.

Two devices: `main` (compute) and `offload` (host RAM, pinned on CUDA). A `Placement` owns one
module and knows its *home* copies on the offload device:

- `visit()`: for the duration of a block the module's tensors point at main-device copies, and
  afterwards at their home copies again. Weights do not change while visiting, so nothing is
  copied back: the device copies are simply dropped. Text towers and the VAE run like this.
- `resident()`: the same device copies, kept until `release()` (a DiT that fits the GPU).
- `swapped(counts)`: block swapping (runtime/block_swap.py): most blocks stay home and visit the
  main device one at a time, prefetched on a side stream; the rest is resident.
- `release()`: back to the home copies; the main device holds nothing of the module.

A module loaded straight onto the main device has no home copy yet; its first `release()` moves
it to the offload device once, which becomes its home. When main and offload are the same device
every move is a no-op. Byte counting for any module is `module_bytes` (one definition).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import OutOfMemoryError
from .devices import is_out_of_memory, release_memory


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":  # "cuda" and "cuda:0" are the same device when 0 is current
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index


def tensor_slots(module: nn.Module):
    """(owner, kind, name, tensor) for every parameter and buffer, each listed once."""
    for owner in module.modules():
        for name, tensor in owner._parameters.items():
            if tensor is not None:
                yield owner, "_parameters", name, tensor
        for name, tensor in owner._buffers.items():
            if tensor is not None:
                yield owner, "_buffers", name, tensor


def module_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` as stored (fp8/GGUF bytes count as stored)."""
    return sum(t.numel() * t.element_size() for *_, t in tensor_slots(module))


def _point(owner: nn.Module, kind: str, name: str, tensor: torch.Tensor) -> None:
    """Make `owner.name` this device copy (a frozen Parameter where a parameter was)."""
    getattr(owner, kind)[name] = nn.Parameter(tensor, requires_grad=False) if kind == "_parameters" else tensor


def _restore(owner: nn.Module, kind: str, name: str, tensor: torch.Tensor) -> None:
    """Put the original home object back (no copy, the same Parameter as before)."""
    getattr(owner, kind)[name] = tensor


@dataclass(frozen=True)
class SwapCounts:
    """How much of the DiT block swapping keeps home (on the offload device)."""

    double: int
    single: int
    offload_txt_in: bool = False
    offload_img_in: bool = False
    prefetch: bool = True


class Placement:
    """One module's whereabouts between and during runs (see the module docstring)."""

    def __init__(self, module: nn.Module, main: torch.device | str, offload: torch.device | str = "cpu",
                 what: str = "model", advice: str = "", resident: bool = False):
        self.module = module
        self.advice = advice or "Use block swapping / a smaller weight format, or free the GPU first."
        self.main = torch.device(main)
        self.offload = torch.device(offload)
        self.what = what
        self._home: list[tuple[nn.Module, str, str, torch.Tensor]] | None = None  # while resident
        self._resident = resident          # True when it was loaded straight onto the main device
        self._swap = None
        self._swap_counts: SwapCounts | None = None

    @property
    def state(self) -> str:
        """'home', 'resident' or 'swapped' (also where main and offload are one device)."""
        if self._swap is not None:
            return "swapped"
        return "resident" if self._resident else "home"

    @property
    def moves(self) -> bool:
        return not same_device(self.main, self.offload)

    @property
    def swap(self):
        """The installed BlockSwap (its report and statistics), or None."""
        return self._swap

    def resident(self) -> None:
        """Every tensor on the main device until `release()`."""
        if self._swap is not None:
            self._remove_swap()
        if self._resident:
            return
        self._resident = True
        if not self.moves:
            return
        home = [slot for slot in tensor_slots(self.module) if not same_device(slot[3].device, self.main)]
        try:
            for owner, kind, name, tensor in home:
                _point(owner, kind, name, tensor.to(self.main, non_blocking=tensor.is_pinned()))
        except Exception as error:
            for slot in home:
                _restore(*slot)
            self._resident = False
            release_memory(self.main)
            if is_out_of_memory(error) and not isinstance(error, OutOfMemoryError):
                raise OutOfMemoryError(
                    f"{self.what}: out of memory on {self.main} while placing {module_bytes(self.module) / 2**30:.1f} "
                    f"GiB of weights there. {self.advice}",
                    suggestion={"bytes": module_bytes(self.module)}) from error
            raise
        self._home = home or None

    def swapped(self, counts: SwapCounts):
        """Block swapping with these counts (reinstalled only when they change); returns its report."""
        from .block_swap import BlockSwap
        if self._swap is not None and self._swap_counts == counts:
            return self._swap.report
        self.release()
        swap = BlockSwap(counts.double, counts.single, main=self.main, offload=self.offload,
                         offload_txt_in=counts.offload_txt_in, offload_img_in=counts.offload_img_in,
                         prefetch=counts.prefetch)
        report = swap.install(self.module)
        self._swap, self._swap_counts = swap, counts
        return report

    def release(self) -> None:
        """Nothing of the module on the main device any more."""
        if self._swap is not None:
            self._remove_swap()
        if self._home is not None:
            for slot in self._home:
                _restore(*slot)
            self._home = None
        elif self.moves and self._any_on_main():
            self.module.to(self.offload)   # loaded straight onto the GPU: the offload copy becomes home
        self._resident = False
        release_memory(self.main)

    @contextlib.contextmanager
    def visit(self):
        """The module on the main device for the block; home again afterwards, also on errors."""
        was = self.state
        self.resident()
        try:
            yield self.module
        finally:
            if was == "home":
                self.release()

    def _remove_swap(self) -> None:
        self._swap.remove(to=self.offload)
        self._swap = self._swap_counts = None

    def _any_on_main(self) -> bool:
        return any(same_device(t.device, self.main) for *_, t in tensor_slots(self.module))
