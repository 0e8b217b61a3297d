"""Apply, re-weight and remove LoRAs on a loaded DiT without reloading it.

`apply_loras(model, loras, mode)` makes the model carry exactly the given LoRAs: it first puts
every layer a previous call changed back to its base bytes (bit-exact, from snapshot.py), then
applies the new list. Per layer:

- merge: ΔW = Σ strength·block multiplier·scale·B·A is summed in float32 and added to the weight
  once (plain bf16/fp16/fp32 tensors: one rounding); fp8 layers go through their codec:
  dequantize -> add in float32 -> store (re-quantised with a fresh scale), and the
  re-quantisation error is reported;
- unmerged: a LoraAdapter per (LoRA, layer) adds scale·B·(A·x) at run time (GGUF, whose bytes
  cannot be rewritten, and strength changes that touch no weight).
mode "auto" merges where the codec can store and uses adapters elsewhere.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ..model.ops import casting_layers
from .adapters import LoraAdapter, layer_adapters, set_layer_adapters
from .report import LoraMatch, LoraReport, RequantisationError
from .resolve import (LoraSpec, ResolvedLora, as_blocks, as_spec, resolve_lora,
                      weight_shape, widen_for_loras)
from .snapshot import LoraState

log = logging.getLogger(__name__)

MODES = ("auto", "merge", "unmerged")


def apply_loras(model: nn.Module, loras: Iterable, mode: str = "auto") -> LoraReport:
    """Make `model` carry exactly these LoRAs: items are LoraSpec, LoraFile, a path, or a tuple
    (lora, strength[, BlockStrengths or its text form]). An empty list removes all LoRAs.
    If this fails, the LoRAs applied before are put back and the error is raised."""
    if mode not in MODES:
        raise InvalidInputError(f"LoRA mode: must be one of {MODES}, got {mode!r}.")
    specs = [as_spec(item) for item in loras]
    state = getattr(model, "lora_state", None)
    previous = (list(state.specs), state.mode) if state is not None else None
    if state is not None:
        _restore(model, state)
    if not specs:
        _detach(model)
        _weights_changed(model)
        return LoraReport((), mode)
    state = state or LoraState(model.config)
    model.lora_state = state
    try:
        widened = widen_for_loras(model, state, specs)
        resolved = [resolve_lora(model, spec) for spec in specs]
        report = _apply(model, state, resolved, mode, widened)
    except BaseException:
        _restore(model, state)    # never leave a half-applied stack behind
        _detach(model)
        if previous and previous[0]:
            apply_loras(model, *previous)
        else:
            _weights_changed(model)
        raise
    _weights_changed(model)
    state.specs, state.mode, state.report = specs, mode, report
    log.info("%s", report.summary())
    return report


def remove_loras(model: nn.Module, which: Sequence[str | int] | None = None) -> LoraReport:
    """Remove all LoRAs (which=None) or the named / indexed ones; base weights come back bit-exact."""
    state = getattr(model, "lora_state", None)
    if state is None:
        return LoraReport((), "auto")
    drop = set(range(len(state.specs))) if which is None else {_index(state, w) for w in which}
    keep = [s for i, s in enumerate(state.specs) if i not in drop]
    return apply_loras(model, keep, state.mode)


def set_strengths(model: nn.Module, strengths: Mapping[str | int, object] | Sequence[float]) -> LoraReport:
    """Change strengths (and optionally block strengths: value (strength, BlockStrengths)) of
    applied LoRAs by name or index. Runtime adapters just change a number; merged layers are
    rebuilt from their saved base bytes (never from disk)."""
    state = getattr(model, "lora_state", None)
    if state is None or not state.specs:
        raise InvalidInputError("set_strengths: no LoRA is applied to this model; apply one first.")
    if isinstance(strengths, (str, bytes)) or not isinstance(strengths, (Mapping, Sequence)):
        raise InvalidInputError(f"set_strengths: expected {{name or index: strength}} or a list of strengths, got "
                                f"{type(strengths).__name__}.")
    items = strengths.items() if isinstance(strengths, Mapping) else enumerate(strengths)
    specs = list(state.specs)
    for which, value in items:
        i = _index(state, which)
        if isinstance(value, tuple) and len(value) != 2:
            raise InvalidInputError(f"set_strengths: LoRA {which!r}: expected a strength or (strength, block "
                                    f"strengths), got {value!r}.")
        strength, blocks = value if isinstance(value, tuple) else (value, specs[i].blocks)
        specs[i] = replace(specs[i], strength=strength, blocks=as_blocks(blocks))  # LoraSpec checks both
    if _retune_adapters(model, state, specs):
        return state.report
    return apply_loras(model, specs, state.mode)


# -- changing the layers ------------------------------------------------------------------------
def _apply(model, state: LoraState, resolved: list[ResolvedLora], mode: str, widened) -> LoraReport:
    layers = casting_layers(model)
    wanted = {m for r in resolved for m in r.patches}
    modules = [m for m in layers if m in wanted]
    merged, unmerged, requantised, notes = [], [], [], []
    for module in modules:
        active = [(r, r.patches[module], r.multiplier(module)) for r in resolved if module in r.patches]
        active = [a for a in active if a[2] != 0.0]
        if not active:
            continue
        layer = layers[module]
        how = _method(layer, mode)
        if how == "merge":
            outcome = _merge(state, module, layer, active, allow_fallback=mode == "auto")
            if outcome is None:
                how = "unmerged"
            elif isinstance(outcome, RequantisationError):
                requantised.append(outcome)
        if how == "unmerged" and mode == "auto":
            notes.append(f"{module}: weights cannot be rewritten ({type(layer.codec).__name__}); runtime adapter used")
        if how == "merge":
            merged.append(module)
        else:
            _attach(model, state, module, layer, active)
            unmerged.append(module)
    norm_keys = _merge_norms(model, state, resolved)
    merged.extend(sorted(norm_keys))
    matches = tuple(_match(r, norm_keys) for r in resolved)
    return LoraReport(matches, mode, tuple(merged), tuple(unmerged), tuple(requantised), widened, tuple(notes))


def _method(layer: nn.Module, mode: str) -> str:
    if mode == "unmerged":
        return "unmerged"
    codec = layer.codec
    rewritable = hasattr(codec, "dequantize") and hasattr(codec, "store") and getattr(codec, "can_store", True)
    if codec is None or rewritable:
        return "merge"
    if mode == "merge":
        raise InvalidInputError(
            f"LoRA mode 'merge': a layer is stored as {type(codec).__name__}, which cannot be re-written. "
            "Use mode 'auto' or 'unmerged' (runtime adapters).")
    return "unmerged"


def _merge(state: LoraState, module: str, layer: nn.Module, active, allow_fallback: bool):
    """Add the summed ΔW to the stored weight. Returns True (plain weight), the
    RequantisationError (codec layers), or None when the codec refused to store in mode "auto"
    (the layer is then back to its base bytes)."""
    state.snapshot(module, layer)
    device = layer.weight.device
    rows = weight_shape(layer)[0]
    delta = sum(mult * patch.delta(rows, device) for _, patch, mult in active)
    if layer.codec is None:
        weight = layer.weight
        weight.data.copy_((weight.float() + delta).to(weight.dtype))  # in place: keeps pinned memory
        return True
    target = layer.codec.dequantize(layer).float() + delta
    try:
        layer.codec.store(layer, target)
    except InvalidInputError as exc:
        state.snapshots.pop(module).restore(layer)
        if allow_fallback:
            return None
        raise InvalidInputError(f"LoRA on {module}: {exc} Use mode 'auto' or 'unmerged'.") from exc
    error = (layer.codec.dequantize(layer).float() - target).abs().max()
    peak = target.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return RequantisationError(module, float(error), float(error / peak))


def _attach(model, state: LoraState, module: str, layer: nn.Module, active) -> None:
    dtype = getattr(model, "compute_dtype", None) or torch.float32
    adapters = [LoraAdapter(r.spec.lora.name, patch, layer, mult, dtype) for r, patch, mult in active]
    set_layer_adapters(layer, layer_adapters(layer) + adapters)
    state.adapters.setdefault(module, []).extend(adapters)


def _merge_norms(model, state: LoraState, resolved: list[ResolvedLora]) -> set[str]:
    """Trained norm scales: W = base + Σ strength·(trained − base) (strength 1 = the trained value)."""
    done = set()
    keys = {k for r in resolved for k in r.norms}
    for key in sorted(keys):
        module_name, _, leaf = key.rpartition(".")
        module = model.get_submodule(module_name)
        terms = [(r.multiplier(module_name), r.norms[key]) for r in resolved if key in r.norms]
        terms = [(m, t) for m, t in terms if m != 0.0]
        if not terms:
            continue
        state.snapshot(module_name, module)
        param = getattr(module, leaf)
        base = param.float()
        new = base + sum(m * (t.to(base.device).float() - base) for m, t in terms)
        param.data.copy_(new.to(param.dtype))
        done.add(key)
    return done


def _match(r: ResolvedLora, norm_keys: set[str]) -> LoraMatch:
    matched = [m for m in r.patches if r.multiplier(m) != 0.0] + [k for k in r.norms if k in norm_keys]
    skipped = [m for m in r.patches if r.multiplier(m) == 0.0 and r.spec.strength != 0.0]
    return LoraMatch(r.spec.lora.name, r.spec.lora.format, r.spec.strength, tuple(matched),
                     tuple(r.unmatched), tuple(skipped), tuple(r.notes))


# -- undoing ---------------------------------------------------------------------------------------
def _restore(model: nn.Module, state: LoraState) -> None:
    for module, adapters in state.adapters.items():
        layer = model.get_submodule(module)
        set_layer_adapters(layer, [a for a in layer_adapters(layer) if not any(a is b for b in adapters)])
    state.adapters.clear()
    for module, snap in state.snapshots.items():
        snap.restore(model.get_submodule(module))
    state.snapshots.clear()
    model.config = state.base_config


def _weights_changed(model: nn.Module) -> None:
    """Merges and restores edit stored tensors in place; a block-swap placement may hold
    prefetched device copies of them, which must be dropped."""
    refresh = getattr(getattr(model, "placement", None), "refresh", None)
    if callable(refresh):
        refresh()


def _detach(model: nn.Module) -> None:
    if "lora_state" in model.__dict__:
        del model.__dict__["lora_state"]


def _retune_adapters(model, state: LoraState, specs: list[LoraSpec]) -> bool:
    """Only runtime adapters, and every one keeps a non-zero strength: change the numbers only."""
    report = state.report
    if report is None or report.merged:
        return False
    by_name = {}
    for old, new in zip(state.specs, specs):
        if old.lora is not new.lora:
            return False
        by_name.setdefault(old.lora.name, []).append(new)
    plan = []
    for module, adapters in state.adapters.items():
        for adapter in adapters:
            candidates = by_name.get(adapter.lora_name, [])
            if len(candidates) != 1:
                return False
            mult = candidates[0].multiplier(module)
            if mult == 0.0:
                return False
            plan.append((adapter, mult))
    if any(_newly_active(old, new) for old, new in zip(state.specs, specs)):
        return False
    for adapter, mult in plan:
        adapter.multiplier = mult
    state.specs = specs
    state.report = replace(report, loras=tuple(replace(m, strength=s.strength) for m, s in zip(report.loras, specs)))
    return True


def _newly_active(old: LoraSpec, new: LoraSpec) -> bool:
    """A module that had strength 0 (no adapter) and now needs one."""
    return any(old.multiplier(m) == 0.0 and new.multiplier(m) != 0.0 for m in old.lora.modules)


def _index(state: LoraState, which) -> int:
    if isinstance(which, int):
        if not 0 <= which < len(state.specs):
            raise InvalidInputError(f"LoRA index {which}: {len(state.specs)} LoRAs are applied (0..{len(state.specs) - 1}).")
        return which
    found = [i for i, s in enumerate(state.specs) if s.lora.name == which]
    if len(found) != 1:
        names = [s.lora.name for s in state.specs]
        raise InvalidInputError(
            f"LoRA {which!r}: {'not applied' if not found else 'applied more than once; use its index'} "
            f"(applied: {names}).")
    return found[0]
