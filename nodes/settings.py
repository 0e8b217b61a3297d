"""Small typed settings that flow between the pack's nodes (speed options, swapping, compile).

They describe what to do, not a live object: the sampler builds a fresh cache policy for every
run from a CacheSettings, and the model handle installs block swapping from SwapSettings once the
video size is known (the `auto` counts depend on it).
"""
from __future__ import annotations

from dataclasses import dataclass

from hyvideo_core.errors import InvalidInputError

GIB = 2**30


@dataclass(frozen=True)
class CacheSettings:
    """TeaCache or first-block cache for one sampler run."""

    kind: str                  # "teacache" | "first_block_cache"
    threshold: float
    start_step: int = 0
    end_step: int | None = None
    storage: str = "main"      # where cached residuals live: "main" | "offload"

    def build(self):
        from hyvideo_core.sampling import FirstBlockCache, TeaCache
        policy = {"teacache": TeaCache, "first_block_cache": FirstBlockCache}.get(self.kind)
        if policy is None:
            raise InvalidInputError(f"cache: unknown policy {self.kind!r}; use teacache or first_block_cache.")
        return policy(self.threshold, self.start_step, self.end_step, storage=self.storage)

    def describe(self) -> str:
        window = f"steps {self.start_step}..{'end' if self.end_step is None else self.end_step}"
        return f"{self.kind} threshold {self.threshold:g}, {window}, residuals on {self.storage}"


@dataclass(frozen=True)
class SwapSettings:
    """Block swapping; `None` counts mean 'auto': the planner picks the least swapping that fits
    `budget_gb` (0 = the free memory of the main device) for the video being sampled."""

    double: int | None = None
    single: int | None = None
    budget_gb: float = 0.0
    offload_txt_in: bool = False
    offload_img_in: bool = False
    prefetch: bool = True

    @property
    def auto(self) -> bool:
        return self.double is None or self.single is None

    def budget_bytes(self, free_bytes: int) -> int:
        return int(self.budget_gb * GIB) if self.budget_gb > 0 else int(free_bytes)

    def describe(self) -> str:
        counts = "auto" if self.auto else f"{self.double} double + {self.single} single blocks"
        budget = f", budget {self.budget_gb:g} GiB" if self.auto and self.budget_gb > 0 else ""
        return f"block swap {counts}{budget}"


@dataclass(frozen=True)
class CompileSettings:
    """torch.compile of every DiT block (applied once, at load)."""

    backend: str = "inductor"
    mode: str = "default"
    fullgraph: bool = False
    dynamic: bool = False

    def options(self) -> dict:
        options = {"backend": self.backend, "fullgraph": self.fullgraph, "dynamic": self.dynamic}
        if self.mode != "default":
            options["mode"] = self.mode
        return options
