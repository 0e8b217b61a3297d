"""Small typed settings that flow between the pack's nodes (block swapping, compile).

They describe what to do, not a live object: the run layer installs block swapping from a
BlockSwapSettings once the video size is known (the `auto` counts depend on it), and the sampler
builds a fresh cache policy for every run from the engine's CacheRequest.
"""
from __future__ import annotations

from dataclasses import dataclass

from hyvideo_core.run import SwapRequest


@dataclass(frozen=True)
class BlockSwapSettings:
    """The Block Swap node's choice: the swap request and the budget auto plans for."""

    request: SwapRequest
    budget_gb: float | None = None     # GiB of the main device; None = all of it

    def describe(self) -> str:
        budget = f", budget {self.budget_gb:g} GiB" if self.request.mode == "auto" and self.budget_gb else ""
        return self.request.describe() + budget


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
