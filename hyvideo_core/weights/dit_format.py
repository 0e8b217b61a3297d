"""Detect a DiT checkpoint's layout from its keys and plan how to read each official tensor.

Layouts: official Tencent names, ComfyUI internal names, diffusers names; each optionally under
a prefix (`model.diffusion_model.`, `diffusion_model.`, ...). The result maps every official key
to a `Recipe` (source keys + how to join them), so loaders read lazily, tensor by tensor.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from ..errors import UnknownFormatError
from .comfy_names import comfy_to_official_key
from .diffusers_names import official_module_of, split_module_key, swap_halves
from .identify import describe
from .reader import TensorSource

PREFIXES = ("", "model.diffusion_model.", "diffusion_model.", "model.model.", "model.", "transformer.", "module.", "net.")
_MARKERS = {
    "official": "txt_in.individual_token_refiner.blocks.0.norm1.weight",
    "diffusers": "context_embedder.token_refiner.refiner_blocks.0.norm1.weight",
}
# Per-layer scale tensors of fp8_scaled files and markers; consumed by the weight storage.
SIDECAR_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".input_scale")
SIDECAR_KEYS = ("scaled_fp8",)


@dataclass(frozen=True)
class Recipe:
    """One official tensor = these source tensors stacked by rows, halves swapped if asked."""

    sources: tuple[str, ...]
    swap_halves: bool = False

    def shape(self, source: TensorSource) -> tuple[int, ...]:
        shapes = [source.shape(k) for k in self.sources]
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def dtype(self, source: TensorSource) -> torch.dtype:
        return source.dtype(self.sources[0])

    def read(self, source: TensorSource) -> torch.Tensor:
        parts = [source.get(k) for k in self.sources]
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        return swap_halves(tensor) if self.swap_halves else tensor


@dataclass
class DiTLayout:
    format: str                           # "official" | "comfy" | "diffusers"
    prefix: str
    recipes: dict[str, Recipe]            # official key -> recipe
    sidecars: dict[str, str] = field(default_factory=dict)  # official-ish name -> source key (fp8 scales)
    unknown: list[str] = field(default_factory=list)        # keys under the prefix we cannot map
    outside: int = 0                      # keys outside the prefix (other models in the file)

    def shapes(self, source: TensorSource) -> dict[str, tuple[int, ...]]:
        return {k: r.shape(source) for k, r in self.recipes.items()}


def detect_layout(source: TensorSource) -> DiTLayout:
    keys = source.keys()
    for prefix in PREFIXES:
        for kind, marker in _MARKERS.items():
            if prefix + marker in source:
                inner = [k[len(prefix):] for k in keys if k.startswith(prefix)]
                layout = _plan(kind, inner, prefix)
                layout.outside = len(keys) - len(inner)
                return layout
    raise UnknownFormatError(
        f"{source.name}: not a HunyuanVideo transformer; it looks like {describe(keys)}. "
        "Choose a HunyuanVideo DiT file (e.g. hunyuan_video_t2v_720p_bf16.safetensors) in "
        "models/diffusion_models.")


def _plan(kind: str, keys: list[str], prefix: str) -> DiTLayout:
    side = [k for k in keys if k.endswith(SIDECAR_SUFFIXES) or k in SIDECAR_KEYS]
    weights = [k for k in keys if k not in set(side)]
    if kind == "diffusers":
        recipes, unknown = _plan_diffusers(weights, prefix)
        fmt = "diffusers"
    else:
        recipes, unknown, fmt = _plan_named(weights, prefix)
    return DiTLayout(fmt, prefix, recipes, _name_sidecars(side, recipes, prefix), unknown)


def _name_sidecars(side: list[str], recipes: dict[str, Recipe], prefix: str) -> dict[str, str]:
    """{official module + suffix (e.g. 'double_blocks.0.img_attn_qkv.scale_weight'): source key}."""
    by_source_module = {split_module_key(r.sources[0])[0]: split_module_key(k)[0]
                        for k, r in recipes.items() if len(r.sources) == 1}
    named = {}
    for key in side:
        module, leaf = split_module_key(prefix + key)
        official = by_source_module.get(module)
        named[f"{official}.{leaf}" if official else key] = prefix + key
    return named


def _plan_named(keys: list[str], prefix: str):
    """Official or ComfyUI-internal names (both may not be mixed in one file)."""
    comfy = any("_attn.qkv." in k or ".modulation.lin." in k for k in keys)
    recipes, unknown = {}, []
    for key in keys:
        official = comfy_to_official_key(key) if comfy else key
        if official is None:
            unknown.append(prefix + key)
        else:
            recipes[official] = Recipe((prefix + key,))
    return recipes, unknown, "comfy" if comfy else "official"


def _plan_diffusers(keys: list[str], prefix: str):
    parts: dict[str, dict[int, str]] = defaultdict(dict)
    counts: dict[str, int] = {}
    swaps: set[str] = set()
    unknown = []
    for key in keys:
        module, leaf = split_module_key(key)
        found = official_module_of(module)
        if found is None:
            unknown.append(prefix + key)
            continue
        official, index, count = found
        parts[f"{official}.{leaf}"][index] = prefix + key
        counts[f"{official}.{leaf}"] = count
        if official == "final_layer.adaLN_modulation.1":
            swaps.add(f"{official}.{leaf}")
    recipes = {}
    for official, by_index in parts.items():
        if len(by_index) != counts[official]:
            unknown.extend(by_index.values())  # an incomplete q/k/v set cannot be fused
            continue
        recipes[official] = Recipe(tuple(by_index[i] for i in range(counts[official])), official in swaps)
    return recipes, unknown
