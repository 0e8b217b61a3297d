"""How a run tells a person what it is doing: stages with progress, notes, and timings.

`Reporter` says nothing; the CLI's reporter draws a bar per stage. `StageClock` times each
stage for the run's summary line and passes progress on to the reporter.
"""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager

import torch

from ..runtime.devices import is_cuda
from .settings import StageTime


class Reporter:
    """Receives a run's stages, progress and notes; this base class ignores them."""

    def begin(self, stage: str, total: int | None = None, unit: str = "it") -> None:
        pass

    def update(self, done: int, total: int | None = None) -> None:
        pass

    def end(self, stage: str, seconds: float, detail: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


class StageClock:
    """Times the stages of one run and forwards them to a reporter."""

    def __init__(self, reporter: Reporter | None = None):
        self.reporter = reporter or Reporter()
        self.stages: list[StageTime] = []
        self.notes: list[str] = []
        self._detail = ""

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "it"):
        self._detail = ""
        self.reporter.begin(name, total, unit)
        start = time.perf_counter()
        yield self
        seconds = time.perf_counter() - start
        self.stages.append(StageTime(name, seconds, self._detail))
        self.reporter.end(name, seconds, self._detail)

    def detail(self, text: str) -> None:
        """What the current stage did, shown when it ends (e.g. '12.1 GB at 3.2 GB/s')."""
        self._detail = text

    def progress(self, done: int, total: int | None = None) -> None:
        self.reporter.update(done, total)

    def note(self, text: str) -> None:
        if text and text not in self.notes:
            self.notes.append(text)
            self.reporter.note(text)


def rate(nbytes: int, seconds: float) -> str:
    """'12.10 GB at 3.21 GB/s' (MB for small files)."""
    scale, unit = (1e9, "GB") if nbytes >= 1e9 else (1e6, "MB")
    return f"{nbytes / scale:.2f} {unit} at {nbytes / scale / max(seconds, 1e-6):.2f} {unit}/s"


def peak_memory(device: torch.device) -> int:
    """Peak memory of the run: allocated on the CUDA device, else the process's peak RSS."""
    if is_cuda(device):
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
