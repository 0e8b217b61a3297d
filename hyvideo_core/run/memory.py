"""The memory plan of a run and the block swap it gets: one meaning of budget, one of auto.

The budget is the number of bytes of the main device the run may fill: `budget_gb` when given,
else the device's total memory (the planner's reserve covers the CUDA context). Inside ComfyUI
the host is asked to move its own models away until the plan's peak is free; the CLI runs alone.
`SwapRequest(mode="auto")` asks the planner for the least swapping that fits that budget; on a
machine whose main device is the CPU nothing moves, so auto means no swap.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

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


def budget_bytes(budget_gb: float | None, device: torch.device, total: int | None = None) -> int | None:
    """The run's budget in bytes: the given GiB, else the device's total memory (None on a CPU)."""
    budget_gb = check_budget(budget_gb)
    if budget_gb is not None:
        return int(budget_gb * GiB)
    if total is not None:
        return int(total)
    return total_bytes(device) if is_cuda(device) else None


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
