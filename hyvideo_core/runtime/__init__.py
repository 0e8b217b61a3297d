"""Running the DiT within a memory budget: devices, block swapping, the memory planner.

Public entry points: `block_swap.BlockSwap`, `planner.PlanInputs` / `plan` / `auto_swap` /
`plan_for_model`, `oom.oom_guard` / `oom_with_plan`, `devices.main_device`.
"""
