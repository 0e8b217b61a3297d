"""What every cache policy shares: the protocol the loop and the DiT call, per-branch state,
skip counts, and where cached tensors live.

The loop calls `start_run(total_steps)` once (state is reset there), `begin_step(step, branch)`
before every forward (branch is "cond", "uncond" or "cond+uncond" for batched true CFG), and
`release()` at the end (also on cancellation). The DiT calls `run(model, e) -> img` in place of
its blocks while the policy is installed as `model.cache`.

Under a parallel policy (hyvideo_core.parallel) each rank holds a shard of the image tokens and
maybe one CFG half; the skip decision must be the same on every rank (or the ranks deadlock in
the next collective) and equal to one process's. So the relative L1 is computed from the
partial sums of all ranks (`token_sums(model)`: |diff| and |previous| summed over the real
tokens, all-reduced), whose ratio is the one-process mean ratio.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch

from ...errors import InvalidInputError


class CachePolicy(Protocol):
    name: str

    def start_run(self, total_steps: int) -> None: ...

    def begin_step(self, step: int, branch: str) -> None: ...

    def run(self, model, e) -> torch.Tensor: ...

    def report(self) -> "CacheReport": ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class CacheReport:
    policy: str
    computed: int                         # forwards that ran every block
    skipped: int                          # forwards that reused the cached residual
    per_branch: dict[str, tuple[int, int]] = field(default_factory=dict)  # branch -> (computed, skipped)

    def __str__(self) -> str:
        total = self.computed + self.skipped
        return f"{self.policy}: skipped {self.skipped} of {total} forwards ({self.computed} computed)"


@contextmanager
def installed(model, policy) -> Iterator:
    """Make `policy` the model's cache for the block; the previous one is restored after."""
    previous = model.cache
    model.cache = policy
    try:
        yield policy
    finally:
        model.cache = previous


def token_sums(model):
    """The model's cross-rank sums of per-token tensors (`model.parallel.token_sums`), or None
    in one process."""
    return getattr(getattr(model, "parallel", None), "token_sums", None)


def relative_l1(current: torch.Tensor, previous: torch.Tensor, sums=None) -> float:
    """mean|current - previous| / mean|previous|, in float32. `sums(*tensors) -> [floats]`
    (token_sums) makes it the ratio of sums over every rank's real tokens."""
    previous = previous.to(device=current.device, dtype=torch.float32)
    current = current.float()
    if sums is not None:
        diff, base = sums((current - previous).abs(), previous.abs())
        return diff / base
    return float((current - previous).abs().mean() / previous.abs().mean())


class StepCache:
    """Base of the policies: steps window, per-branch state and counters, tensor storage.

    `storage` is "main" (keep cached tensors where they were computed) or "offload" (the CPU,
    pinned when the compute device is CUDA) or an explicit device.
    """

    name = "cache"

    def __init__(self, threshold: float, start_step: int = 0, end_step: int | None = None,
                 storage: str | torch.device = "main"):
        if not threshold >= 0:
            raise InvalidInputError(f"{self.name} threshold: must be >= 0 (0 disables skipping), got {threshold}.")
        if start_step < 0 or (end_step is not None and end_step <= start_step):
            raise InvalidInputError(
                f"{self.name} start_step/end_step: need 0 <= start_step < end_step, got {start_step}/{end_step}.")
        self.threshold = float(threshold)
        self.start_step = int(start_step)
        self.end_step = end_step
        self.storage = storage
        self.start_run(0)

    # -- protocol ------------------------------------------------------------------------
    def start_run(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.step = 0
        self.branch = "cond"
        self.states: dict[str, object] = {}
        self.counts: dict[str, list[int]] = {}

    def begin_step(self, step: int, branch: str) -> None:
        self.step, self.branch = step, branch

    def report(self) -> CacheReport:
        per_branch = {b: (c[0], c[1]) for b, c in self.counts.items()}
        return CacheReport(self.name, sum(c for c, _ in per_branch.values()),
                           sum(s for _, s in per_branch.values()), per_branch)

    def release(self) -> None:
        self.states = {}

    # -- helpers for subclasses ------------------------------------------------------------
    def may_skip_now(self) -> bool:
        """False on the first and last step of the run, outside [start_step, end_step), and at
        threshold 0; only then may a policy reuse its cache."""
        end = self.total_steps if self.end_step is None else min(self.end_step, self.total_steps)
        inside = self.start_step <= self.step < end
        return self.threshold > 0 and inside and 0 < self.step < self.total_steps - 1

    def state(self, factory):
        if self.branch not in self.states:
            self.states[self.branch] = factory()
        return self.states[self.branch]

    def count(self, skipped: bool) -> None:
        c = self.counts.setdefault(self.branch, [0, 0])
        c[1 if skipped else 0] += 1

    def store(self, t: torch.Tensor) -> torch.Tensor:
        """Detach a tensor into the cache's storage device (a copy when it moves)."""
        t = t.detach()
        if self.storage == "main":
            return t
        target = torch.device("cpu") if self.storage == "offload" else torch.device(self.storage)
        if t.device == target:
            return t
        if t.device.type == "cuda" and target.type == "cpu":
            out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            return out.copy_(t, non_blocking=True)
        return t.to(target)

    @staticmethod
    def load(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(device=like.device, dtype=like.dtype, non_blocking=True)
