"""Turn a device out-of-memory during sampling/decoding into our OutOfMemoryError with a plan.

The sampling loop or a node wraps the risky call:

    with oom_guard(plan_inputs, stage="sampling"):
        latents = sample(...)

and a CUDA OOM comes out as `hyvideo_core.errors.OutOfMemoryError` whose message says what the
planner predicted and what would fit, and whose `.suggestion` is that `Plan` (swap counts etc.).
"""
from __future__ import annotations

from contextlib import contextmanager


from ..errors import OutOfMemoryError
from .devices import is_cuda, is_out_of_memory, main_device, release_memory, total_bytes
from .planner import GiB, PlanInputs, auto_swap, plan


def oom_with_plan(exc: BaseException, inputs: PlanInputs, *, budget: int | None = None,
                  stage: str = "sampling", device="auto") -> OutOfMemoryError:
    """The error to raise instead of `exc` (call as `raise oom_with_plan(exc, inputs) from exc`)."""
    dev = main_device(device)
    given_budget = budget
    budget = budget or total_bytes(dev) or 0
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    current = plan(inputs)
    head = (f"Out of memory on {dev} during {stage} ({detail}). The planner predicts a peak of "
            f"{current.peak / GiB:.1f} GiB for this run (swap {current.swap[0]} double + {current.swap[1]} "
            f"single blocks) on a {budget / GiB:.1f} GiB device.")
    if not is_cuda(dev) and not given_budget:
        advice = (" Nothing can be swapped off this device (block swap moves weights from a GPU to RAM): use a "
                  "smaller size or fewer frames, fp8/GGUF weights, or a GPU.")
        return OutOfMemoryError(head + advice, suggestion=current)
    try:
        better = auto_swap(inputs, budget=budget)
        advice = (f" Swap {better.swap[0]} double + {better.swap[1]} single blocks"
                  + (" and offload txt_in" if better.inputs.offload_txt_in else "")
                  + f" (predicted {better.peak / GiB:.1f} GiB), or use fp8/GGUF weights or a smaller size.")
    except OutOfMemoryError as none_fits:
        better = none_fits.suggestion
        advice = " " + str(none_fits).replace("planner: ", "")
    return OutOfMemoryError(head + advice, suggestion=better)


@contextmanager
def oom_guard(inputs: PlanInputs, *, stage: str = "sampling", budget: int | None = None, device="auto"):
    """Re-raise a device OOM inside the block as OutOfMemoryError carrying the planner's advice."""
    error = None
    try:
        yield
    except OutOfMemoryError:
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        error = oom_with_plan(exc, inputs, budget=budget, stage=stage, device=device)
    if error is not None:
        # Outside the except block the failed frames (and their tensors) are no longer referenced.
        release_memory(main_device(device))
        raise error
