"""The memory plan of a run and the block swap it gets: one meaning of budget, one of auto.

The budget is the number of bytes of the main device the run may fill: `budget_gb` when given,
else the device's total memory (the planner's reserve covers the CUDA context). Inside ComfyUI
the host is asked to move its own models away until the plan's peak is free; the CLI runs alone.
`SwapRequest(mode="auto")` asks the planner for the least swapping that fits that budget; on a
machine whose main device is the CPU nothing moves, so auto means no swap.

`check_fits` is the refusal before the first step: the planner's sampling estimate against the
most the device can hold (CUDA: its total memory; CPU: the host RAM in total), with the nearest
sizes that fit when it does not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OutOfMemoryError
from ..runtime.devices import is_cuda, total_bytes
from ..runtime.placement import SwapCounts
from ..runtime.planner import GiB, Plan, PlanInputs, auto_swap, plan
from .settings import SwapRequest, check_budget


@dataclass(frozen=True)
class PlacementPlan:
    """What the planner chose: the plan, the swap to install (None = whole model resident), why."""

    plan: Plan
    swap: SwapCounts | None
    budget: int | None
    note: str = ""


def budget_bytes(budget_gb: float | None, device: torch.device, total: int | None = None,
                 parameter: str = "budget (--vram-gb / vram_budget_gb)") -> int | None:
    """The run's budget in bytes: the given GiB, else the device's total memory (None on a CPU)."""
    budget_gb = check_budget(budget_gb, parameter)
    if budget_gb is not None:
        return int(budget_gb * GiB)
    if total is not None:
        return int(total)
    return total_bytes(device) if is_cuda(device) else None


# A host's memory setting (ComfyUI's --lowvram, --novram, --highvram; "normal" anywhere else).
MEMORY_MODES = ("normal", "low", "none", "high")


def swap_for_memory_mode(request: SwapRequest, mode: str, double_blocks: int,
                         single_blocks: int) -> tuple[SwapRequest, str]:
    """What the host's memory setting makes of the block swap asked for, and a note when it changes
    it: 'none' swaps every block (and txt_in), 'low' turns 'off' into 'auto' (the least swapping
    that fits); fixed counts from the user are always kept."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode {mode!r} is not one of {MEMORY_MODES}")
    if request.mode == "fixed" or mode in ("normal", "high"):
        return request, ""
    if mode == "none":
        every = SwapRequest("fixed", double_blocks, single_blocks, offload_txt_in=True,
                            offload_img_in=request.offload_img_in, prefetch=request.prefetch)
        return every, ("ComfyUI runs with --novram: every block (and txt_in) is swapped; a Block Swap node with "
                       "fixed counts overrides this")
    if request.mode == "off":
        return SwapRequest("auto", offload_txt_in=request.offload_txt_in, offload_img_in=request.offload_img_in,
                           prefetch=request.prefetch), \
            "ComfyUI runs with --lowvram: block swap 'auto' (the least swapping that fits) in place of 'off'"
    return request, ""


def swaps_under(mode: str, request: SwapRequest) -> bool:
    """Whether a DiT loaded for `request` under this memory mode will be block-swapped (then its
    weights load into RAM, not onto the GPU)."""
    return request.active or mode in ("low", "none")


def plan_placement(inputs: PlanInputs, swap: SwapRequest, budget: int | None, device: torch.device) -> PlacementPlan:
    """The plan for this swap request (auto: the least swapping that fits `budget`)."""
    if swap.mode == "off":
        return PlacementPlan(plan(inputs.replace(swap_double=0, swap_single=0)), None, budget)
    if swap.mode == "fixed":
        fixed = inputs.replace(swap_double=swap.double, swap_single=swap.single, offload_txt_in=swap.offload_txt_in,
                               offload_img_in=swap.offload_img_in, prefetch=swap.prefetch)
        chosen = plan(fixed)
        note = "" if budget is None or chosen.fits(budget) else (
            f"the planner predicts {chosen.peak / GiB:.1f} GiB with this swap, above the {budget / GiB:.1f} GiB "
            "budget; swap 'auto' would pick counts that fit")
        return PlacementPlan(chosen, _counts(chosen, swap), budget, note)
    if budget is None:
        none = plan(inputs.replace(swap_double=0, swap_single=0))
        return PlacementPlan(none, None, None, f"auto swap: the main device is {device}, where nothing moves; "
                                               "no blocks swapped")
    base = inputs.replace(offload_txt_in=swap.offload_txt_in, offload_img_in=swap.offload_img_in,
                          prefetch=swap.prefetch)
    chosen = auto_swap(base, budget=budget)
    note = (f"auto swap: {chosen.swap[0]} double + {chosen.swap[1]} single blocks offloaded "
            f"(predicted peak {chosen.peak / GiB:.1f} GiB of a {budget / GiB:.1f} GiB budget)")
    if chosen.swap == (0, 0) and not chosen.inputs.offload_txt_in and not swap.offload_img_in:
        return PlacementPlan(chosen, None, budget, note)
    return PlacementPlan(chosen, _counts(chosen, swap), budget, note)


def _counts(chosen: Plan, swap: SwapRequest) -> SwapCounts:
    return SwapCounts(chosen.swap[0], chosen.swap[1], offload_txt_in=chosen.inputs.offload_txt_in,
                      offload_img_in=swap.offload_img_in, prefetch=swap.prefetch)


def device_capacity(device: torch.device, reported_total: int | None = None) -> int | None:
    """The most memory a run can ever have on `device`: the host's figure when it gives one (ComfyUI),
    else a CUDA device's total memory, or on a CPU the host RAM in total (psutil.virtual_memory().total).
    Total, not free: the DiT is already loaded when sampling is planned, and its weights are part of the
    estimate, so comparing with the free memory would count them twice. None when unknown."""
    return int(reported_total) if reported_total else total_bytes(device)


def sampling_need(p: Plan) -> int:
    """The planner's estimate of the sampling phase: resident weights, swap slots, activations,
    latents and text, plus its reserve (CUDA context / process overhead). The VAE decode is a later
    stage with its own tiling and out-of-memory fallback, so it is not part of this check."""
    return p.sampling_peak + p.inputs.reserve


def check_fits(placement: PlacementPlan, device: torch.device, capacity: int | None) -> None:
    """Refuse, before the first step, a request the planner says cannot fit in `capacity` bytes,
    with the estimate and the nearest sizes that fit. On a device that is not CUDA every weight
    stays in that memory whatever the swap, so the plan is taken without swapping there."""
    if not capacity:
        return
    inputs = placement.plan.inputs
    if not is_cuda(device):
        inputs = inputs.replace(swap_double=0, swap_single=0, offload_txt_in=False, offload_img_in=False)
    need = sampling_need(plan(inputs))
    if need <= capacity:
        return
    where = f"the {device} device's {capacity / GiB:.1f} GiB" if is_cuda(device) else \
        f"{capacity / GiB:.1f} GiB of host RAM in total (the main device is {device})"
    nearest, suggestion = _nearest_fits(inputs, capacity)
    remedies = "fp8 or GGUF weights, or " + ("block swapping (swap 'auto')" if is_cuda(device) else "a GPU")
    raise OutOfMemoryError(
        f"{inputs.width}x{inputs.height}x{inputs.frames} cannot fit: the planner estimates {need / GiB:.1f} GiB for "
        f"sampling it ({inputs.weight_format} weights, batch {inputs.batch}), more than {where}. Nothing was "
        f"computed. {nearest} Or use {remedies}.", suggestion=suggestion)


def _nearest_fits(inputs: PlanInputs, capacity: int) -> tuple[str, dict | None]:
    """The largest frame count at the asked size, and the largest size at the asked aspect and frame
    count, that the planner says fit (each found by bisection: the estimate grows with both)."""
    def fits(**size) -> bool:
        return sampling_need(plan(inputs.replace(**size))) <= capacity

    found, parts = [], []
    # frames 4k+1: the largest k below the asked one that fits
    k = _largest(0, (inputs.frames - 1) // 4 - 1, lambda k: fits(frames=4 * k + 1))
    if k is not None:
        found.append(dict(width=inputs.width, height=inputs.height, frames=4 * k + 1))
        parts.append(f"At {inputs.width}x{inputs.height} the largest frame count that fits is {4 * k + 1}.")
    # widths in multiples of 16 below the asked one, the height keeping the aspect
    def size_at(w16: int) -> dict:
        width = 16 * w16
        height = max(16, round(inputs.height * width / inputs.width / 16) * 16)
        return dict(width=width, height=height)
    w = _largest(1, inputs.width // 16 - 1, lambda w16: fits(**size_at(w16), frames=inputs.frames))
    if w is not None:
        size = size_at(w)
        found.append(dict(size, frames=inputs.frames))
        parts.append(f"At {inputs.frames} frames the largest size of the same aspect that fits is "
                     f"{size['width']}x{size['height']}.")
    if not found:
        if fits(width=16, height=16, frames=1):
            return ("Lower both the size and the frame count (16x16x1 fits).",
                    {"fits": [dict(width=16, height=16, frames=1)]})
        return ("Not even 16x16x1 fits: the model's weights alone are too large for this memory.", None)
    return " ".join(parts), {"fits": found}


def _largest(low: int, high: int, ok) -> int | None:
    """The largest n in [low, high] with ok(n), assuming ok holds up to some n and fails above it."""
    if high < low or not ok(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low
