"""Callbacks the sampling loop runs every step, whatever the mode."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import CancelledError

ProgressFn = Callable[[int, int], None]                 # (steps done, total steps)
PreviewFn = Callable[[int, int, torch.Tensor], None]    # (steps done, total, RGB [B,T,h,w,3] in 0..1)
CancelFn = Callable[[], bool]                           # True (or raising) stops sampling


@dataclass
class SamplingHooks:
    progress: Optional[ProgressFn] = None
    preview: Optional[PreviewFn] = None
    cancelled: Optional[CancelFn] = None

    def check_cancelled(self, step: int, total: int) -> None:
        if self.cancelled is not None and self.cancelled():
            raise CancelledError(f"Sampling cancelled before step {step + 1} of {total}.")
