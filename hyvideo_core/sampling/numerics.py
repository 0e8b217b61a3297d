"""Why a sampling step's velocity went NaN/inf: a diagnostic that runs only after the failure.

The loop tests each step's velocity (one `isfinite` over the velocity, nothing per layer). When
it fails, `diagnose_non_finite` runs that one step's forward again with forward hooks on every
module of the DiT and names the first module whose output went non-finite although its inputs
were finite (the module that produced the NaN/inf, not one that merely passed it on), and the
LoRAs the model carries. The caches are bypassed for the re-run, so every block really runs.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def describe_non_finite(velocity, x: torch.Tensor, timestep: float, step: int) -> str:
    """One sentence for the error: where the NaN/inf came from, and the LoRAs applied."""
    return f"{_origin(velocity, x, timestep, step)} {_loras(getattr(velocity, 'model', None))}"


def _origin(velocity, x: torch.Tensor, timestep: float, step: int) -> str:
    model = getattr(velocity, "model", None)
    if not isinstance(model, nn.Module):
        return "(the model could not be re-run to find the module)."
    if not _finite(x):
        return "The latent entering this step already held NaN/inf (the previous solver step overflowed)."
    if _distributed():
        # a re-run is collective: other ranks, which may not have failed, would not join it
        return "(not re-run to find the module: the model runs across several processes.)"
    first: list[tuple[str, bool]] = []
    seen = [0]

    def hook(name: str):
        def check(module, args, kwargs, output):
            seen[0] += 1
            if len(first) < 2 and not _finite(output):
                inputs_finite = _finite(args) and _finite(kwargs)
                if inputs_finite or not first:
                    first.append((name, inputs_finite))
        return check

    handles = [m.register_forward_hook(hook(name), with_kwargs=True) for name, m in model.named_modules()]
    cache = getattr(model, "cache", None)
    model.cache = None
    try:
        with torch.no_grad():
            again = velocity(x, timestep, step)
    except Exception as error:  # noqa: BLE001 - a diagnostic must not hide the original failure
        return f"(re-running the step to find the module failed: {type(error).__name__}: {error})."
    finally:
        for handle in handles:
            handle.remove()
        model.cache = cache
    origin = next((f for f in first if f[1]), None)
    if origin is not None:
        return f"The first module whose output went NaN/inf (from finite inputs) is {_label(model, origin[0])}."
    if first:
        return (f"The first module with a NaN/inf output is {_label(model, first[0][0])}; its inputs (the "
                "conditioning or the latent) were already non-finite.")
    if not _finite(again) and seen[0] <= 1:
        return "(the layers could not be observed on a re-run, e.g. compiled blocks; run uncompiled to find them.)"
    if not _finite(again):
        return ("Every module's output was finite on a re-run: the guidance combination (cfg_scale) overflowed; "
                "lower cfg_scale.")
    return "A re-run of the step gave finite values (the overflow is intermittent)."


def _distributed() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _label(model: nn.Module, name: str) -> str:
    if not name:
        return f"the DiT itself ({type(model).__name__}, outside its layers)"
    return f"'{name}' ({type(model.get_submodule(name)).__name__})"


def _loras(model) -> str:
    specs = getattr(getattr(model, "lora_state", None), "specs", None) or ()
    if not specs:
        return "No LoRA is applied."
    listed = ", ".join(f"{s.lora.name} x{s.strength:g}" + (" (per-block strengths)" if s.blocks else "")
                       for s in specs)
    return f"LoRAs applied: {listed} (try without them, or with lower strengths)."


def _finite(value) -> bool:
    """True when every float tensor in `value` (a tensor, or tuples / lists / dicts / objects of them)
    is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or value.numel() == 0 or bool(torch.isfinite(value).all())
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    fields = getattr(value, "__dataclass_fields__", None)
    if fields:
        return all(_finite(getattr(value, f, None)) for f in fields)
    return True
