"""What flows on the HYVIDEO_MODEL socket: a loaded DiT plus what to do with it before sampling.

ComfyUI caches node outputs, so every node downstream of the loader gets the *same* loaded
transformer on every run. Anything that changes how it is used (LoRAs, block swapping) is
therefore declarative: a LoRA node returns a new handle that lists one more LoRA, and the sampler
calls `prepare`, which makes the shared transformer carry exactly the handle's LoRAs (applying,
re-weighting or removing them in place, never reloading) and the swap placement for this video.
Two branches of a graph with different LoRAs on one model each get their own set, because every
sampler re-declares its set before it runs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from hyvideo_core.lora import LoraSpec, apply_loras, set_strengths

from .settings import SwapSettings

log = logging.getLogger(__name__)


class LoadedModel:
    """One loaded transformer and where it lives; ComfyUI's 'unload models' moves it off the GPU."""

    def __init__(self, transformer, main: torch.device, offload: torch.device, source: str, summary: str):
        self.transformer = transformer
        self.main = torch.device(main)
        self.offload = torch.device(offload)
        self.source = source
        self.summary = summary
        self.swap = None                 # the installed BlockSwap, if any
        self.swap_key = None             # (double, single, txt_in, img_in, prefetch) it was installed with
        self.on_main = False             # whole model resident on the main device (no swap)

    def unload(self) -> None:
        """Give the main device back (called by the host when ComfyUI unloads models)."""
        if self.swap is not None:
            self.swap.remove(to=self.offload)
            self.swap = self.swap_key = None
        elif self.on_main and self.main != self.offload:
            self.transformer.to(self.offload)
        self.on_main = False

    def place_whole(self) -> None:
        if self.swap is not None:
            self.swap.remove()
            self.swap = self.swap_key = None
        if not self.on_main:
            self.transformer.to(self.main)
            self.on_main = True

    def place_swapped(self, double: int, single: int, settings: SwapSettings) -> str:
        from hyvideo_core.runtime.block_swap import BlockSwap
        key = (double, single, settings.offload_txt_in, settings.offload_img_in, settings.prefetch)
        if self.swap is not None and self.swap_key == key:
            return self.swap.report.summary()
        if self.swap is not None:
            self.swap.remove(to=self.offload)
        elif self.on_main and self.main != self.offload:
            self.transformer.to(self.offload)  # start from the host copies, never hold two
        self.on_main = False
        swap = BlockSwap(double, single, main=self.main, offload=self.offload, offload_txt_in=settings.offload_txt_in,
                         offload_img_in=settings.offload_img_in, prefetch=settings.prefetch)
        report = swap.install(self.transformer)
        self.swap, self.swap_key = swap, key
        return report.summary()


@dataclass(frozen=True)
class HyVideoModel:
    loaded: LoadedModel
    swap: SwapSettings | None = None
    loras: tuple[LoraSpec, ...] = ()

    @property
    def transformer(self):
        return self.loaded.transformer

    @property
    def main(self) -> torch.device:
        return self.loaded.main

    def with_lora(self, spec: LoraSpec) -> "HyVideoModel":
        return replace(self, loras=self.loras + (spec,))

    def prepare(self, run: "RunShape", host) -> list[str]:
        """LoRAs and placement for a run of this shape; returns what was done, for the node's report.
        ComfyUI's own models are asked to leave the room the run needs on the main device first."""
        notes = [] if (text := sync_loras(self.transformer, self.loras)) is None else [text]
        inputs = self.plan_inputs(run)
        host.free_device_memory(self.bytes_wanted(inputs, host), self.main)
        if self.swap is None:
            self.loaded.place_whole()
            return notes
        double, single, why = self.swap_counts(inputs, host)
        notes.append(self.loaded.place_swapped(double, single, self.swap) + why)
        return notes

    def plan_inputs(self, run: "RunShape"):
        from hyvideo_core.runtime.planner import plan_for_model
        settings = self.swap or SwapSettings(0, 0)
        return plan_for_model(self.transformer, weight_format=storage_name(self.transformer), width=run.width,
                              height=run.height, frames=run.frames, batch=run.batch, cfg_batched=run.cfg_batched,
                              attention=self.transformer.attention.name, swap_double=settings.double or 0,
                              swap_single=settings.single or 0, offload_txt_in=settings.offload_txt_in,
                              offload_img_in=settings.offload_img_in, prefetch=settings.prefetch)

    def bytes_wanted(self, inputs, host) -> int:
        """The planner's peak for fixed placements; for auto swap the budget it may fill."""
        if self.swap is not None and self.swap.auto:
            return self.swap.budget_bytes(host.device_memory(self.main)[1])
        from hyvideo_core.runtime.planner import plan
        return plan(inputs).peak

    def swap_counts(self, inputs, host) -> tuple[int, int, str]:
        settings = self.swap
        if not settings.auto:
            return settings.double, settings.single, ""
        from hyvideo_core.runtime.planner import GiB, auto_swap
        budget = settings.budget_bytes(host.device_memory(self.main)[0])
        plan = auto_swap(inputs, budget)
        return plan.swap[0], plan.swap[1], (f" (auto: predicted peak {plan.peak / GiB:.1f} GiB of a "
                                            f"{budget / GiB:.1f} GiB budget)")


@dataclass(frozen=True)
class RunShape:
    """The size of a sampling run, as the planner needs it."""

    width: int
    height: int
    frames: int
    batch: int = 1
    cfg_batched: bool = False


def storage_name(transformer) -> str:
    """How the loaded weights are stored ('bf16', 'fp8_e4m3fn', 'gguf', ...), for the planner's messages."""
    report = getattr(transformer, "load_report", None)
    return report.storage.removeprefix("auto:") if report is not None else "bf16"


def sync_loras(transformer, wanted: tuple[LoraSpec, ...]) -> str | None:
    """Make `transformer` carry exactly `wanted`; None when it already does (nothing to report)."""
    state = getattr(transformer, "lora_state", None)
    current = list(state.specs) if state is not None else []
    if _same_specs(current, wanted):
        return None
    if current and len(current) == len(wanted) and all(a.lora is b.lora for a, b in zip(current, wanted)):
        report = set_strengths(transformer, {i: (s.strength, s.blocks) for i, s in enumerate(wanted)})
    else:
        report = apply_loras(transformer, list(wanted))
    if not wanted:
        return "LoRAs removed from the model (this branch uses none)"
    return report.summary()


def _same_specs(current: list[LoraSpec], wanted: tuple[LoraSpec, ...]) -> bool:
    # LoraFile holds tensors, so specs are compared by file identity and numbers, not with ==.
    return len(current) == len(wanted) and all(
        a.lora is b.lora and a.strength == b.strength and a.blocks == b.blocks for a, b in zip(current, wanted))
