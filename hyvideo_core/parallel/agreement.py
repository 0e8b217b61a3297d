"""Stopping every rank at the same step: the ranks agree on cancellation once per step.

Under a parallel policy every forward is a chain of collectives, so a rank that stops alone
leaves the others waiting in the next one. `AgreedStop` wraps one rank's sampling hooks: before
each step every rank contributes "do I want to stop?" to one all-reduce (MAX over a 1-element
tensor, so the cost is one tiny collective per step), and if any rank wants to, all of them stop
before that step. A rank's own stop request may arrive as a raised exception (ComfyUI's
interrupt, raised by the host from the progress or cancel callback); it is held until the ranks
agree and then re-raised on that rank, so the host sees its own interrupt, while the other ranks
raise the loop's CancelledError.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..sampling import SamplingHooks


class AgreedStop:
    def __init__(self, local: SamplingHooks | None, device: torch.device | str, group=None):
        self.local = local or SamplingHooks()
        self.device = torch.device(device)
        self.group = group
        self.pending: BaseException | None = None   # this rank's own stop, raised by its host
        self.stopped = False                        # the ranks agreed to stop

    def hooks(self) -> SamplingHooks:
        local = self.local
        return SamplingHooks(
            progress=None if local.progress is None else lambda done, total: self._guard(local.progress, done, total),
            preview=None if local.preview is None else lambda done, total, rgb: self._guard(
                local.preview, done, total, rgb),
            cancelled=self._cancelled)

    def raise_pending(self) -> None:
        """After a run that finished: a stop this rank's host asked for during the last step."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            raise pending

    def _guard(self, callback, *args) -> None:
        try:
            callback(*args)
        except BaseException as error:     # noqa: BLE001 - held until every rank agrees (see above)
            if self.pending is None:
                self.pending = error

    def _cancelled(self) -> bool:
        wants = self.pending is not None
        if not wants and self.local.cancelled is not None:
            try:
                wants = bool(self.local.cancelled())
            except BaseException as error:  # noqa: BLE001 - the host's interrupt, held as above
                self.pending, wants = error, True
        flag = torch.tensor([1.0 if wants else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if float(flag.item()) == 0.0:
            return False
        self.stopped = True
        if self.pending is not None:
            pending, self.pending = self.pending, None
            raise pending
        return True
