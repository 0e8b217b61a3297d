"""Where an fp8 checkpoint keeps its scales, for each of the three fp8 releases in the wild.

- kijai-style plain fp8: same keys as bf16, float8 tensors, no scales (scale 1).
- Comfy-Org `*_fp8_scaled.safetensors`: a `scaled_fp8` marker tensor (its dtype is the fp8
  type) and per-layer `<module>.scale_weight` (and sometimes `<module>.scale_input`) tensors,
  weight = fp8 * scale_weight. The file's own scales are always used.
- Official Tencent `..._fp8.pt` with a separate `..._fp8_map.pt`: {official module name: scale}
  (weight = fp8 * scale). Both are read with weights_only=True through `reader`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError
from .dit_format import PREFIXES, DiTLayout
from .fp8 import FP8_DTYPES
from .reader import TensorSource, open_tensors

_WEIGHT_SCALE = (".scale_weight", ".weight_scale")
_INPUT_SCALE = (".scale_input", ".input_scale")
MARKER = "scaled_fp8"


@dataclass
class FileScales:
    """The scales an fp8 checkpoint provides, looked up by the *source* module of a weight."""

    source: TensorSource
    weight_keys: dict[str, str] = field(default_factory=dict)   # source module -> scale key
    input_keys: dict[str, str] = field(default_factory=dict)
    map_scales: dict[str, torch.Tensor] = field(default_factory=dict)  # official module -> scale
    map_file: str | None = None
    marked: bool = False  # the file promises a scale for every fp8 weight

    def weight_scale(self, source_key: str, official_module: str) -> torch.Tensor | None:
        module = source_key.rsplit(".", 1)[0]
        if module in self.weight_keys:
            return self.source.get(self.weight_keys[module]).float()
        if official_module in self.map_scales:
            return self.map_scales[official_module].float()
        return None

    def input_scale(self, source_key: str) -> torch.Tensor | None:
        key = self.input_keys.get(source_key.rsplit(".", 1)[0])
        return None if key is None else self.source.get(key).float()

    def missing(self, source_key: str, official_module: str) -> CheckpointError:
        if self.map_file:
            where = f"the scale map {self.map_file} has no entry '{official_module}'"
        else:
            where = f"expected '{source_key.rsplit('.', 1)[0]}.scale_weight'"
        return CheckpointError(
            f"{self.source.name}: fp8_scaled checkpoint, but the fp8 weight '{source_key}' has no "
            f"scale ({where}). Without it the layer would compute with wrong magnitudes. The file is "
            "incomplete or was converted wrongly: download it again.")


def file_scales(layout: DiTLayout, source: TensorSource, scale_map=None) -> FileScales:
    scales = FileScales(source)
    for key in layout.sidecars.values():
        for suffixes, table in ((_WEIGHT_SCALE, scales.weight_keys), (_INPUT_SCALE, scales.input_keys)):
            for suffix in suffixes:
                if key.endswith(suffix):
                    table[key[: -len(suffix)]] = key
    scales.marked = bool(scales.weight_keys) or any(k == MARKER or k.endswith("." + MARKER) for k in source.keys())
    if scale_map is None and not scales.weight_keys and _has_fp8(layout, source):
        scale_map = _sibling_map(source)
    if scale_map is not None:
        scales.map_scales, scales.map_file = _read_map(scale_map), str(scale_map)
        scales.marked = True
    return scales


def _has_fp8(layout: DiTLayout, source: TensorSource) -> bool:
    return any(source.dtype(r.sources[0]) in FP8_DTYPES for r in layout.recipes.values())


def _sibling_map(source: TensorSource) -> Path | None:
    """`x_fp8.pt` -> `x_fp8_map.pt` next to it (the official naming). A torch fp8 file without its
    map cannot be used: its weights are scaled, and guessing scale 1 would be silently wrong."""
    path = Path(source.name)
    if path.suffix not in (".pt", ".pth"):
        return None
    candidate = path.with_name(path.stem + "_map.pt")
    if candidate.is_file():
        return candidate
    raise CheckpointError(
        f"{path}: fp8 weights in a torch checkpoint (the official fp8 release) need their scale map, "
        f"but {candidate.name} is not next to it. Put the matching `_fp8_map.pt` in the same folder "
        "(or pass scale_map=...).")


def _read_map(path) -> dict[str, torch.Tensor]:
    src = open_tensors(path)
    table = {}
    for key in src.keys():
        table[_official_module(key)] = src.get(key)
    if not table:
        raise CheckpointError(f"{path}: fp8 scale map holds no tensors.")
    return table


def _official_module(key: str) -> str:
    for prefix in sorted(PREFIXES, key=len, reverse=True):
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
            break
    for suffix in (".weight", ".scale_weight", ".scale", ".fp8_scale"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key
