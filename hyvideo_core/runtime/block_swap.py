"""Block swapping: most of the DiT's blocks live in host RAM and visit the GPU one at a time.

`BlockSwap(double=N, single=M)` installed on a model (`swap.install(model)`, which sets
`model.placement`) keeps the first N double and the first M single blocks (and optionally
`img_in` / `txt_in`) on the offload device. Everything else is moved to the main device.

How a swapped block runs (the transformer calls `placement.enter(block)` / `exit(block)`):
- Its stored tensors (fp8 / GGUF bytes, scales, biases, LoRA adapter buffers: whatever
  `named_parameters`/`named_buffers` hold) are copied into a *slot*: one preallocated byte buffer
  on the main device, carved into views. Two slots: the block running and the next one being
  prefetched. Buffers are reused for the whole run, so device memory stays flat and predictable
  (the planner counts exactly these bytes).
- On CUDA: host copies are pinned, copies run on a side stream, an event orders "copy done"
  before the block's kernels and another orders "block done" before the slot is overwritten;
  the next swapped block (in run order, wrapping to the next step) is prefetched while the
  current one computes.
- On exit the block's tensors are pointed back at their host copies. Weights do not change during
  sampling, so nothing is copied back: "moving back" just drops the device copy.
- When main and offload are the same device (CPU-only), every move is a no-op. `simulate=True`
  forces the slot mechanism anyway (synchronous copies), which tests use to check it on a CPU.

Weights changed while installed (a LoRA merge, new adapters) are noticed when a block's tensors
are replaced; after in-place edits call `refresh()`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .devices import is_cuda, main_device, pin

log = logging.getLogger(__name__)

ALIGN = 256  # bytes; every tensor in a slot starts on this boundary (vectorised kernels)


def aligned(nbytes: int) -> int:
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN


def packed_bytes(sizes) -> int:
    """Bytes of a slot holding tensors of these byte sizes."""
    return sum(aligned(int(n)) for n in sizes)


@dataclass(frozen=True)
class SwapReport:
    requested: tuple[int, int]      # (double, single) asked for
    double: int                     # effective counts after clamping
    single: int
    offload_txt_in: bool
    offload_img_in: bool
    moves: bool                     # False when main == offload (all moves are no-ops)
    slots: int
    slot_bytes: int
    clamped: bool

    def summary(self) -> str:
        extra = [n for n, on in (("txt_in", self.offload_txt_in), ("img_in", self.offload_img_in)) if on]
        text = f"block swap: {self.double} double + {self.single} single blocks offloaded"
        text += f" (+{', '.join(extra)})" if extra else ""
        if self.clamped:
            text += f" (asked for {self.requested[0]} + {self.requested[1]}, clamped to the model's blocks)"
        if not self.moves:
            return text + "; main and offload device are the same, so nothing moves"
        return text + f"; {self.slots} device slots of {self.slot_bytes / 2**20:.1f} MiB"


@dataclass
class SwapStats:
    fetches: int = 0          # copies of a block into a slot
    prefetched_hits: int = 0  # enters that found their block already copied
    bytes_copied: int = 0
    enters: int = 0


class _Unit:
    """One swapped module: where each of its tensors lives, and the host copy of each."""

    def __init__(self, module: nn.Module, name: str):
        self.module = module
        self.name = name
        self.entries: list[tuple[nn.Module, str, bool]] = []
        self.host: list[torch.Tensor] = []

    def current(self) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
        found = []
        for sub in self.module.modules():
            found += [(sub, leaf, True, p) for leaf, p in sub._parameters.items() if p is not None]
            found += [(sub, leaf, False, b) for leaf, b in sub._buffers.items() if b is not None]
        return found

    def capture(self, offload: torch.device, pin_memory: bool) -> None:
        """(Re)record the host copies: the module's tensors, moved to offload (and pinned)."""
        self.entries, self.host = [], []
        for sub, leaf, is_param, tensor in self.current():
            host = tensor.data.to(offload)
            host = pin(host) if pin_memory else host
            self.entries.append((sub, leaf, is_param))
            self.host.append(host)
        self.bind(self.host)

    def is_stale(self) -> bool:
        """True when tensors were added/replaced since `capture` (only valid while unbound)."""
        now = self.current()
        if len(now) != len(self.host):
            return True
        return any(t.data_ptr() != h.data_ptr() for (_, _, _, t), h in zip(now, self.host))

    def bind(self, tensors: list[torch.Tensor]) -> None:
        for (sub, leaf, is_param), tensor in zip(self.entries, tensors):
            put(sub, leaf, is_param, tensor)

    def nbytes(self) -> list[int]:
        return [h.numel() * h.element_size() for h in self.host]


@dataclass
class _Slot:
    buffer: torch.Tensor
    unit: _Unit | None = None
    views: list[torch.Tensor] = field(default_factory=list)
    bound: bool = False
    ready: object = None  # CUDA events (None elsewhere)
    free: object = None


class _SyncCopies:
    """Plain synchronous copies (CPU simulation, MPS, ...)."""

    def copy(self, slot: _Slot, host: list[torch.Tensor]) -> None:
        for view, src in zip(slot.views, host):
            view.copy_(src)

    def before_use(self, slot: _Slot) -> None:
        pass

    def after_use(self, slot: _Slot) -> None:
        pass


class _CudaCopies:
    """Copies on a side stream, ordered against the compute stream with events."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def copy(self, slot: _Slot, host: list[torch.Tensor]) -> None:
        with torch.cuda.stream(self.stream):
            if slot.free is not None:  # the previous occupant's kernels must be done with the slot
                self.stream.wait_event(slot.free)
            for view, src in zip(slot.views, host):
                view.copy_(src, non_blocking=True)
            slot.ready = torch.cuda.Event()
            slot.ready.record(self.stream)

    def before_use(self, slot: _Slot) -> None:
        torch.cuda.current_stream(self.device).wait_event(slot.ready)

    def after_use(self, slot: _Slot) -> None:
        slot.free = torch.cuda.Event()
        slot.free.record(torch.cuda.current_stream(self.device))


class BlockSwap:
    """Placement policy: see the module docstring. Counts above the model's blocks are clamped."""

    def __init__(self, double: int = 0, single: int = 0, *, main="auto", offload="cpu",
                 offload_txt_in: bool = False, offload_img_in: bool = False, prefetch: bool = True,
                 pin_memory: bool = True, compile_blocks: bool = False, simulate: bool = False):
        if double < 0 or single < 0:
            from ..errors import InvalidInputError
            raise InvalidInputError(f"block swap: counts must be >= 0, got double={double}, single={single}.")
        self.requested = (int(double), int(single))
        self.main = main_device(main)
        self.offload = torch.device(offload)
        self.offload_txt_in, self.offload_img_in = offload_txt_in, offload_img_in
        self.prefetch = prefetch
        self.pin_memory = pin_memory and is_cuda(self.main)
        self.compile_blocks = compile_blocks
        self.moves = self.main != self.offload or simulate
        self.stats = SwapStats()
        self.model = None
        self.report: SwapReport | None = None
        self._units: dict[int, _Unit] = {}
        self._order: list[_Unit] = []
        self._slots: list[_Slot] = []
        self._hooks = []

    # -- install / remove -------------------------------------------------------------------
    def install(self, model: nn.Module) -> SwapReport:
        if self.model is not None:
            self.remove()
        previous = getattr(model, "placement", None)
        if isinstance(previous, BlockSwap) and previous is not self:
            previous.remove()  # one placement policy at a time
        n_double, n_single = (min(self.requested[0], len(model.double_blocks)),
                              min(self.requested[1], len(model.single_blocks)))
        clamped = (n_double, n_single) != self.requested
        if clamped:
            log.warning("block swap: asked for %d double + %d single blocks, the model has %d + %d; "
                        "swapping %d + %d.", *self.requested, len(model.double_blocks),
                        len(model.single_blocks), n_double, n_single)
        swapped = [*model.double_blocks[:n_double], *model.single_blocks[:n_single]]
        embedders = [(n, getattr(model, n)) for n, on in (("img_in", self.offload_img_in),
                                                          ("txt_in", self.offload_txt_in)) if on]
        names = {id(m): n for n, m in model.named_modules()}
        units = [_Unit(m, n) for n, m in embedders] + [_Unit(b, names[id(b)]) for b in model.blocks if b in swapped]
        self.model = model
        self._units = {id(u.module): u for u in units}
        self._order = units
        if self.moves:
            self._place(model)
            for unit in units:
                unit.capture(self.offload, self.pin_memory)
            self._copies = _CudaCopies(self.main) if is_cuda(self.main) else _SyncCopies()
            self._allocate()
        for _, module in embedders:
            self._hooks.append(module.register_forward_pre_hook(lambda m, args: self.enter(m)))
            self._hooks.append(module.register_forward_hook(lambda m, args, out: self.exit(m), always_call=True))
        if self.compile_blocks:
            from .compile import compile_blocks
            compile_blocks(model)
        model.placement = self
        slot_bytes = self._slots[0].buffer.numel() if self._slots else 0
        self.report = SwapReport(self.requested, n_double, n_single, self.offload_txt_in, self.offload_img_in,
                                 self.moves, len(self._slots), slot_bytes, clamped)
        log.info(self.report.summary())
        return self.report

    def remove(self, to=None) -> None:
        """Uninstall: swapped blocks stay on their host copies, device slots are freed; `to`
        moves the whole model there (e.g. 'cpu' to release the GPU after a cancelled run)."""
        from ..model.transformer import StayInPlace
        if isinstance(getattr(self, "_copies", None), _CudaCopies):
            self._copies.stream.synchronize()  # no copy may still be writing into a slot we drop
        for slot in self._slots:
            if slot.bound and slot.unit is not None:
                slot.unit.bind(slot.unit.host)
        for hook in self._hooks:
            hook.remove()
        model, self.model = self.model, None
        self._hooks, self._slots, self._units, self._order = [], [], {}, []
        if model is not None:
            model.placement = StayInPlace()
            if to is not None:
                model.to(torch.device(to))

    def refresh(self) -> None:
        """Forget prefetched copies (call after editing swapped weights in place)."""
        for slot in self._slots:
            if not slot.bound:
                slot.unit = None

    # -- placement protocol -------------------------------------------------------------------
    def enter(self, module: nn.Module) -> None:
        self.stats.enters += 1
        unit = self._units.get(id(module))
        if unit is None or not self.moves:
            return
        slot = self._holding(unit)
        if slot is not None and slot.bound:
            return  # entered twice without an exit in between: already on the device
        stale = unit.is_stale()
        if stale:
            self._recapture(unit)
            slot = None
        if slot is None:
            slot = self._fetch(unit, avoid=None)
        else:
            self.stats.prefetched_hits += 1
        self._copies.before_use(slot)
        unit.bind(slot.views)
        slot.bound = True
        if self.prefetch:
            following = self._next(unit)
            if following is not unit and self._holding(following) is None and not following.is_stale():
                self._fetch(following, avoid=slot)

    def exit(self, module: nn.Module) -> None:
        unit = self._units.get(id(module))
        if unit is None or not self.moves:
            return
        slot = self._holding(unit)
        if slot is None or not slot.bound:
            return
        self._copies.after_use(slot)
        unit.bind(unit.host)
        slot.bound = False

    # -- introspection (tests, planner checks) ------------------------------------------------
    def swapped_modules(self) -> list[nn.Module]:
        return [u.module for u in self._order]

    def slot_buffers(self) -> list[torch.Tensor]:
        return [s.buffer for s in self._slots]

    # -- internals ------------------------------------------------------------------------------
    def _place(self, model: nn.Module) -> None:
        """Everything that is not swapped goes to the main device (stored bytes as they are)."""
        inside = {id(sub) for unit in self._order for sub in unit.module.modules()}
        for module in model.modules():
            if id(module) in inside:
                continue
            for tensors, is_param in ((module._parameters, True), (module._buffers, False)):
                for leaf, tensor in list(tensors.items()):
                    if tensor is not None and tensor.device != self.main:
                        put(module, leaf, is_param, tensor.data.to(self.main))

    def _allocate(self) -> None:
        size = max((packed_bytes(u.nbytes()) for u in self._order), default=0)
        count = 0 if not self._order else (2 if self.prefetch and len(self._order) > 1 else 1)
        self._slots = [_Slot(torch.empty(size, dtype=torch.uint8, device=self.main)) for _ in range(count)]

    def _recapture(self, unit: _Unit) -> None:
        unit.capture(self.offload, self.pin_memory)
        for slot in self._slots:
            if slot.unit is unit:
                slot.unit = None
        needed = packed_bytes(unit.nbytes())
        if self._slots and needed > self._slots[0].buffer.numel():
            log.info("block swap: %s grew to %.1f MiB (new adapters?); reallocating slots.", unit.name, needed / 2**20)
            for slot in self._slots:
                if slot.bound and slot.unit is not None:
                    slot.unit.bind(slot.unit.host)
            self._allocate()

    def _holding(self, unit: _Unit) -> _Slot | None:
        return next((s for s in self._slots if s.unit is unit), None)

    def _fetch(self, unit: _Unit, avoid: _Slot | None) -> _Slot:
        free = [s for s in self._slots if s is not avoid and not s.bound]
        slot = free[0] if free else next(s for s in self._slots if s is not avoid)
        if slot.bound and slot.unit is not None:  # only after an exception skipped an exit
            slot.unit.bind(slot.unit.host)
            slot.bound = False
        slot.unit = unit
        slot.views = _carve(slot.buffer, unit.host)
        self._copies.copy(slot, unit.host)
        self.stats.fetches += 1
        self.stats.bytes_copied += sum(unit.nbytes())
        return slot

    def _next(self, unit: _Unit) -> _Unit:
        i = self._order.index(unit)
        return self._order[(i + 1) % len(self._order)]


def put(module: nn.Module, leaf: str, is_param: bool, tensor: torch.Tensor) -> None:
    """Point a parameter/buffer at `tensor`, keeping the Parameter object when torch allows."""
    if not is_param:
        module._buffers[leaf] = tensor
        return
    param = module._parameters[leaf]
    if torch._has_compatible_shallow_copy_type(param, tensor):
        param.data = tensor
    else:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def _carve(buffer: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    views, offset = [], 0
    for t in like:
        n = t.numel() * t.element_size()
        views.append(buffer[offset:offset + n].view(t.dtype).view(t.shape))
        offset += aligned(n)
    return views
