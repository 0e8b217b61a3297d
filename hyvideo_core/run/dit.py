"""A loaded DiT as the run layer holds it: the transformer, its placement and its LoRAs.

The CLI loads one for a run; ComfyUI's loader node keeps one across prompts, and every sampler
declares the LoRAs and swap it wants before it runs (`sync_loras`, then `place`), so two graph
branches with different LoRAs on one model each get their own set, without reloading.
"""
from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass

import torch

from ..errors import OutOfMemoryError
from ..lora import LoraSpec, apply_loras, set_strengths
from ..runtime.devices import is_out_of_memory
from ..runtime.placement import Placement
from ..runtime.planner import PlanInputs, plan_for_model
from ..weights.loader import LoadReport
from .choices import FAST_FP8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunShape:
    """The size of a sampling run, as the planner needs it."""

    width: int
    height: int
    frames: int
    batch: int = 1
    cfg_batched: bool = False


@dataclass(frozen=True)
class DiTRecipe:
    """How a DiT was loaded, so another process (a parallel worker) can load the same one."""

    path: str
    dtype: torch.dtype
    weight_format: str
    attention: str
    swapping: bool
    compile_options: dict | None = None

    def load(self, main: torch.device, offload: torch.device) -> "LoadedDiT":
        return load_dit(self.path, dtype=self.dtype, weight_format=self.weight_format, attention=self.attention,
                        main=main, offload=offload, swapping=self.swapping, compile_options=self.compile_options)

    def identity(self) -> str:
        """What must match on every rank (the file by path, size and time, and how it was loaded)."""
        stat = os.stat(self.path)
        return f"{self.path}|{stat.st_size}|{stat.st_mtime_ns}|{self.dtype}|{self.weight_format}|{self.attention}"


class LoadedDiT:
    """One loaded transformer, where it lives, and the LoRAs it carries."""

    def __init__(self, transformer, report: LoadReport, main: torch.device, offload: torch.device,
                 storage_summary: str = "", resident: bool = False, recipe: DiTRecipe | None = None):
        self.recipe = recipe
        self.transformer = transformer
        self.report = report
        self.placement = Placement(transformer, main, offload, what=f"DiT {report.source}", resident=resident)
        self.loras: tuple[LoraSpec, ...] = ()
        self._companions: weakref.WeakSet = weakref.WeakSet()   # unloaded with this DiT (unload_with)
        self.summary = report.summary() + (f"; {storage_summary}" if storage_summary else "")

    @property
    def main(self) -> torch.device:
        return self.placement.main

    @property
    def offload(self) -> torch.device:
        return self.placement.offload

    @property
    def storage_name(self) -> str:
        """How the weights are stored ('bf16', 'fp8_e4m3fn', 'gguf', ...), for the planner."""
        return self.report.storage.removeprefix("auto:")

    @property
    def attention_name(self) -> str:
        return self.transformer.attention.name

    def plan_inputs(self, shape: RunShape) -> PlanInputs:
        """PlanInputs priced with this model's exact tensors (GGUF mixes, fp8 scales, LoRA adapters)."""
        return plan_for_model(self.transformer, weight_format=self.storage_name, width=shape.width,
                              height=shape.height, frames=shape.frames, batch=shape.batch,
                              cfg_batched=shape.cfg_batched, attention=self.attention_name)

    def sync_loras(self, wanted: tuple[LoraSpec, ...]) -> str | None:
        """Make the transformer carry exactly `wanted`; None when it already does."""
        current = self.loras
        if _same_specs(current, wanted):
            return None
        if current and len(current) == len(wanted) and all(a.lora is b.lora for a, b in zip(current, wanted)):
            report = set_strengths(self.transformer, {i: (s.strength, s.blocks) for i, s in enumerate(wanted)})
        else:
            report = apply_loras(self.transformer, list(wanted))
        self.loras = tuple(wanted)
        if not wanted:
            return "LoRAs removed from the model (this run uses none)"
        return report.summary()

    def unload_with(self, companion) -> None:
        """`companion.unload()` runs whenever this DiT is unloaded (e.g. the parallel workers holding
        its copies on the other GPUs); held weakly."""
        self._companions.add(companion)

    def unload(self) -> None:
        """Give the main device back (ComfyUI's 'unload models', or the end of a CLI run)."""
        self.placement.release()
        for companion in list(self._companions):
            companion.unload()


def _same_specs(current, wanted) -> bool:
    # LoraFile holds tensors, so specs are compared by file identity and numbers, not with ==.
    return len(current) == len(wanted) and all(
        a.lora is b.lora and a.strength == b.strength and a.blocks == b.blocks for a, b in zip(current, wanted))


def load_dit(path, *, dtype: torch.dtype, weight_format: str, attention: str, main: torch.device,
             offload: torch.device, swapping: bool, compile_options: dict | None = None) -> LoadedDiT:
    """Load the DiT where it will live: RAM when blocks will be swapped, else the main device."""
    import hyvideo_core
    from ..weights.storage import storage_for

    target = offload if swapping else main
    storage = storage_for(weight_format.removesuffix("_fast"), fast_fp8=weight_format == FAST_FP8)
    try:
        model = hyvideo_core.load_transformer(path, dtype=dtype, device=target, attention=attention, storage=storage)
    except Exception as error:
        if is_out_of_memory(error) and not isinstance(error, OutOfMemoryError):
            raise OutOfMemoryError(
                f"{os.path.basename(str(path))}: out of memory while loading it onto {target}. Use block swapping "
                "(weights then go to RAM and stream to the GPU), or weight format fp8_e4m3fn or a GGUF file.",
                suggestion={"swap": "auto"}) from error
        raise
    if compile_options is not None:
        from ..runtime.compile import compile_blocks
        compile_blocks(model, **compile_options)
    report = getattr(storage, "report", None)
    recipe = DiTRecipe(str(path), dtype, weight_format, attention, swapping, compile_options)
    return LoadedDiT(model, model.load_report, main, offload, report.summary() if report is not None else "",
                     resident=target == main, recipe=recipe)
