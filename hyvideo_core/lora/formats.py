"""Read a LoRA file of any format into one canonical form keyed by official module (SPEC 8).

In every format ΔW = scale·B·A with A ("down", lora_A) [r, in, *kernel] and B ("up", lora_B)
[out, r, 1...]. The canonical form keeps, per official module, a list of `LoraPart`s, each writing
a block of rows of the official weight:

- official / ComfyUI / kohya names: one part covering all rows (for a fused qkv or linear1 the file
  already holds one A shared by q, k, v; nothing is split, which is exactly where diffusers'
  converter goes wrong for the final layer and the refiner qkv, SPEC 8.2);
- diffusers names: one part per q / k / v (/ proj_mlp) at its row offset. Stacking their A's by
  rows and placing their B's block-diagonally gives the fused rank-3r (4r) LoRA of SPEC 8.1;
  `ModuleLora.fused()` returns exactly that;
- diffusers `norm_out.linear` (the final-layer modulation): only B's row halves are swapped back
  to the official [shift; scale] order; A (the rank rows) is left alone.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..weights.diffusers_names import swap_halves
from ..weights.reader import TensorSource, check_finite, open_tensors
from .keys import ALPHA, DIFFUSERS, DOWN, UP, Target, block_count_hint, name_index, split_role, unsupported_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraPart:
    down: torch.Tensor       # A [r, in, *kernel]
    up: torch.Tensor         # B [rows, r, 1, ...]
    scale: float             # alpha / r (1 without alpha)
    row_offset: int = 0      # first row of the official weight this part writes

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def rows(self) -> int:
        return self.up.shape[0]

    def delta(self, device=None) -> torch.Tensor:
        """scale·B·A in float32, shaped like the rows of the weight it writes."""
        up, down = self.up.to(device=device, dtype=torch.float32), self.down.to(device=device, dtype=torch.float32)
        product = up.flatten(1) @ down.flatten(1)
        return (product * self.scale).reshape(self.rows, *self.down.shape[1:])


@dataclass(frozen=True)
class ModuleLora:
    """All LoRA parts that target one official module."""

    module: str
    parts: tuple[LoraPart, ...]
    keys: tuple[str, ...]     # the file's keys that made it (for reports)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.parts[0].down.shape[1:])

    @property
    def rows_needed(self) -> int:
        return max(p.row_offset + p.rows for p in self.parts)

    def delta(self, rows: int | None = None, device=None) -> torch.Tensor:
        """The full ΔW in float32 ([rows, in, *kernel]); rows no part writes are zero."""
        rows = self.rows_needed if rows is None else rows
        out = torch.zeros(rows, *self.in_shape, dtype=torch.float32, device=device)
        for part in self.parts:
            out[part.row_offset: part.row_offset + part.rows] += part.delta(device)
        return out

    def fused(self, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of one equivalent LoRA with scale 1: A = cat(A_i) by rows, B block-diagonal."""
        rows = self.rows_needed if rows is None else rows
        down = torch.cat([p.down.flatten(1).float() for p in self.parts])
        up = torch.zeros(rows, down.shape[0], dtype=torch.float32)
        col = 0
        for p in self.parts:
            up[p.row_offset: p.row_offset + p.rows, col: col + p.rank] = p.up.flatten(1).float() * p.scale
            col += p.rank
        return down.reshape(-1, *self.in_shape), up


@dataclass(frozen=True)
class UnmatchedKey:
    key: str
    reason: str


@dataclass
class LoraFile:
    name: str
    source: str
    format: str                               # e.g. "diffusers/PEFT", "kohya/musubi"
    modules: dict[str, ModuleLora]            # official module -> its LoRA
    full_weights: dict[str, torch.Tensor]     # official parameter key -> trained tensor (e.g. norms)
    unmatched: tuple[UnmatchedKey, ...] = ()
    formats: dict[str, int] = field(default_factory=dict)  # naming label -> number of modules
    keys: tuple[str, ...] = ()

    def delta(self, module: str, rows: int | None = None) -> torch.Tensor:
        return self.modules[module].delta(rows)

    @property
    def patch_embed_channels(self) -> int | None:
        """Input channels the LoRA's patch-embed A expects (32 for the keyframe LoRA), if any."""
        embed = self.modules.get("img_in.proj")
        return None if embed is None else embed.in_shape[0]


def load_lora(source, name: str | None = None) -> LoraFile:
    """Read a LoRA (.safetensors / .pt path, folder, or state dict) in any supported format."""
    src = open_tensors(source)
    try:
        return parse_lora(src, name or _default_name(source, src), _peft_config(source, src))
    finally:
        src.close()


def _default_name(source, src: TensorSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(os.fspath(source)).stem
    return src.name


def parse_lora(src: TensorSource, name: str, peft_config: dict | None = None) -> LoraFile:
    keys = src.keys()
    if not keys:
        raise CheckpointError(f"{src.name}: holds no tensors; it is not a LoRA file.")
    index = name_index(block_count_hint(keys))
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    unmatched: list[UnmatchedKey] = []
    full: dict[str, torch.Tensor] = {}
    for key in keys:
        stem, role = split_role(key)
        reason = unsupported_reason(key)
        if reason is not None:
            unmatched.append(UnmatchedKey(key, reason))
        elif role is not None:
            groups[stem][role] = key
        elif (official := index.param(key)) is not None:
            full[official] = src.get(key)
            check_finite(full[official], key, src.name)
        else:
            unmatched.append(UnmatchedKey(
                key, "not a LoRA tensor (lora_A/lora_B, lora_down/lora_up, alpha) nor a norm weight"))
    alphas = _AlphaSource(peft_config)
    collected: dict[str, list[tuple[Target, LoraPart, tuple[str, ...]]]] = defaultdict(list)
    for stem, roles in groups.items():
        target = index.module(stem)
        if target is None:
            unmatched.extend(UnmatchedKey(k, "no HunyuanVideo DiT module of this name") for k in roles.values())
            continue
        part = _read_part(src, stem, roles, target, alphas)
        collected[target.module].append((target, part, tuple(roles.values())))
    modules = {m: _module(m, entries, src.name) for m, entries in collected.items()}
    if not modules and not full:
        raise _nothing_matched(src, keys, unmatched)
    for u in unmatched:
        log.warning("LoRA %s: key %s not loaded: %s", name, u.key, u.reason)
    labels = Counter(_label(t) for entries in collected.values() for t, _, _ in entries)
    fmt = " + ".join(label for label, _ in labels.most_common()) or "full weights only"
    return LoraFile(name, src.name, fmt, modules, full, tuple(unmatched), dict(labels), tuple(keys))


def _read_part(src: TensorSource, stem: str, roles: dict[str, str], target: Target,
               alphas: "_AlphaSource") -> LoraPart:
    if DOWN not in roles or UP not in roles:
        have, missing = ("down/A", "up/B") if DOWN in roles else ("up/B", "down/A")
        if DOWN not in roles and UP not in roles:
            have, missing = "alpha", "down/A and up/B"
        raise CheckpointError(
            f"{src.name}: LoRA module '{stem}' has its {have} tensor but no {missing} tensor. "
            "The file is incomplete or corrupt: download or export it again.")
    down, up = src.get(roles[DOWN]), src.get(roles[UP])
    check_finite(down, roles[DOWN], src.name)   # a NaN/inf LoRA would turn every video black
    check_finite(up, roles[UP], src.name)
    _check_pair(src.name, stem, down, up)
    rank = down.shape[0]
    alpha = float(src.get(roles[ALPHA]).float().flatten()[0]) if ALPHA in roles else alphas.alpha(stem)
    if alpha is not None and not math.isfinite(alpha):
        raise CheckpointError(f"{src.name}: LoRA module '{stem}' has alpha {alpha}, not a finite number; the file is "
                              "damaged: download or export it again.")
    scale = 1.0 if alpha is None else alphas.scale(alpha, rank)
    if target.swap_halves:
        up = swap_halves(up)  # B's rows only: swapping A's rank rows is diffusers' bug (SPEC 8.2)
    # Fused official modules are split into hidden-sized parts q, k, v (then proj_mlp) by rows
    # (SPEC 2), and their input size is the hidden size: part i starts at row i·in.
    offset = target.part * down.shape[1]
    if target.parts > 1 and target.part < 3 and up.shape[0] != down.shape[1]:
        raise CheckpointError(
            f"{src.name}: LoRA module '{stem}' (part {target.part} of {target.module}) has B with "
            f"{up.shape[0]} rows; a q/k/v part must have as many rows as its input ({down.shape[1]}).")
    return LoraPart(down, up, scale, offset)


def _check_pair(file: str, stem: str, down: torch.Tensor, up: torch.Tensor) -> None:
    if down.ndim not in (2, 5) or up.ndim != down.ndim:
        raise CheckpointError(
            f"{file}: LoRA module '{stem}': A has shape {list(down.shape)} and B {list(up.shape)}; expected "
            "2-D pairs (Linear) or 5-D pairs (Conv3d).")
    if down.shape[0] != up.shape[1]:
        raise CheckpointError(
            f"{file}: LoRA module '{stem}': rank mismatch, A {list(down.shape)} has {down.shape[0]} rows but "
            f"B {list(up.shape)} has {up.shape[1]} columns; they must be equal. The file is corrupt.")
    if any(k != 1 for k in up.shape[2:]):
        raise CheckpointError(
            f"{file}: LoRA module '{stem}': B has kernel {list(up.shape[2:])}; only 1x1x1 up-projections "
            "are supported.")
    if not down.is_floating_point() or not up.is_floating_point():
        raise CheckpointError(f"{file}: LoRA module '{stem}': tensors are {down.dtype}/{up.dtype}, not floats.")


def _module(module: str, entries, file: str) -> ModuleLora:
    parts = tuple(part for _, part, _ in entries)
    keys = tuple(k for _, _, ks in entries for k in ks)
    shapes = {tuple(p.down.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise CheckpointError(
            f"{file}: LoRA tensors for {module} disagree on the input shape ({sorted(shapes)}); keys {list(keys)}.")
    seen = Counter((p.row_offset, p.rows) for p in parts)
    if any(n > 1 for n in seen.values()):
        log.warning("LoRA %s: %s is targeted more than once (keys %s); the deltas are summed.", file, module, keys)
    return ModuleLora(module, parts, keys)


def _label(target: Target) -> str:
    if target.naming == DIFFUSERS:
        return "kohya (diffusers names)" if target.underscored else "diffusers/PEFT"
    if target.underscored:
        return "kohya/musubi" if target.naming == "official" else "kohya (ComfyUI internal names)"
    return "ComfyUI/diffusion-pipe (official names)" if target.naming == "official" else "ComfyUI internal names"


def _nothing_matched(src: TensorSource, keys: list[str], unmatched: list[UnmatchedKey]) -> CheckpointError:
    from ..weights.identify import describe
    first = ", ".join(keys[:5])
    reasons = sorted({u.reason for u in unmatched})
    return CheckpointError(
        f"{src.name}: no key matches a HunyuanVideo DiT module, so this is not a HunyuanVideo LoRA "
        f"(it looks like {describe(keys)}; first keys: {first}; {len(keys)} keys; reasons: "
        f"{'; '.join(reasons)}). Use a LoRA trained for HunyuanVideo (diffusers, kohya/musubi or ComfyUI format).")


class _AlphaSource:
    """Alpha from PEFT / diffusers adapter metadata when the file has no per-module alpha tensors."""

    def __init__(self, config: dict | None):
        config = config or {}
        self.alpha_all = config.get("lora_alpha")
        self.patterns = dict(config.get("alpha_pattern") or {})
        self.rslora = bool(config.get("use_rslora", False))

    def alpha(self, stem: str) -> float | None:
        name = _strip_container(stem)
        for pattern, value in self.patterns.items():
            # PEFT's rule: the pattern matches the end of the module name at a dot boundary.
            if re.match(rf"(.*\.)?({pattern})$", name):
                return float(value)
        return None if self.alpha_all is None else float(self.alpha_all)

    def scale(self, alpha: float, rank: int) -> float:
        return alpha / math.sqrt(rank) if self.rslora else alpha / rank


def _strip_container(stem: str) -> str:
    for prefix in ("base_model.model.", "transformer.", "diffusion_model."):
        if stem.startswith(prefix):
            stem = stem[len(prefix):]
    return stem


def _peft_config(source, src: TensorSource) -> dict | None:
    """PEFT LoraConfig fields from the safetensors metadata (diffusers' `lora_adapter_metadata`,
    optionally prefixed `transformer.`), or from an adapter_config.json next to the file."""
    raw = (src.metadata or {}).get("lora_adapter_metadata")
    if raw:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{src.name}: lora_adapter_metadata is not valid JSON ({exc}).") from exc
        if any(k.startswith("transformer.") for k in meta):
            meta = {k[len("transformer."):]: v for k, v in meta.items() if k.startswith("transformer.")}
        return meta
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        sidecar = (path if path.is_dir() else path.parent) / "adapter_config.json"
        if sidecar.is_file():
            try:
                return json.loads(sidecar.read_text())
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{sidecar}: not valid JSON ({exc}).") from exc
    return None
