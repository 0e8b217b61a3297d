"""LoRA key names -> official HunyuanVideo modules, whatever naming the file uses (SPEC 8).

A LoRA key is `<prefix><module name><tensor suffix>`. The module name can be official
(`double_blocks.0.img_attn_qkv`), ComfyUI internal (`double_blocks.0.img_attn.qkv`), diffusers
(`transformer_blocks.0.attn.to_q`, one part of a fused official module), or any of these with
dots written as underscores (kohya / musubi `lora_unet_double_blocks_0_img_attn_qkv`).

Rather than repairing underscores by string rules (musubi's convert_lora.py does), every alias of
every module of a HunyuanVideo DiT is enumerated once and looked up: a name either is a known
alias or it is reported as unmatched.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable

import torch

from ..model.config import DiTConfig
from ..model.ops import CastWeights
from ..model.transformer import HunyuanVideoTransformer
from ..weights.comfy_names import official_to_comfy
from ..weights.diffusers_names import diffusers_parts

log = logging.getLogger(__name__)

# Tensor roles by key suffix. Order matters: longer suffixes first.
DOWN, UP, ALPHA = "down", "up", "alpha"
_ROLE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_A.default.weight", DOWN), (".lora_B.default.weight", UP),
    (".lora_A.weight", DOWN), (".lora_B.weight", UP),
    (".lora_down.weight", DOWN), (".lora_up.weight", UP),
    (".lora.down.weight", DOWN), (".lora.up.weight", UP),
    (".lora_A", DOWN), (".lora_B", UP),
    (".alpha", ALPHA), (".lora_alpha", ALPHA),
)
# Adapter kinds we recognise but do not implement: named in the report instead of "unknown key".
UNSUPPORTED_MARKERS: tuple[tuple[str, str], ...] = (
    (".dora_scale", "DoRA magnitude vectors are not supported"),
    (".hada_", "LoHa (LyCORIS) is not supported"),
    (".lokr_", "LoKr (LyCORIS) is not supported"),
    (".lora_mid.", "LoCon/Tucker mid weights are not supported"),
    (".lora_B.bias", "LoRA biases are not supported"),
    (".diff_b", "full bias differences (.diff_b) are not supported"),
    (".diff", "full weight differences (.diff) are not supported"),
)
# Containers that wrap the module name, dotted or underscored; stripped repeatedly.
PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "unet.",
            "model.", "lora_unet_", "lora_transformer_", "transformer_")

# Naming kinds of an alias (used to label the file's format).
OFFICIAL, COMFY, DIFFUSERS = "official", "comfy", "diffusers"


@dataclass(frozen=True)
class Target:
    """Where a LoRA module name lands: an official module, or one row part of a fused one."""

    module: str             # official module name, e.g. "double_blocks.0.img_attn_qkv"
    part: int = 0           # index of the diffusers part (q=0, k=1, v=2, proj_mlp=3)
    parts: int = 1          # number of parts the official module is split into
    swap_halves: bool = False  # diffusers final-layer modulation: rows [scale; shift]
    naming: str = OFFICIAL
    underscored: bool = False


def split_role(key: str) -> tuple[str, str | None]:
    """('prefix.module', role) for a LoRA tensor key; role None if it is not a LoRA tensor."""
    for suffix, role in _ROLE_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return key, None


def unsupported_reason(key: str) -> str | None:
    for marker, reason in UNSUPPORTED_MARKERS:
        if marker in key:
            return reason
    return None


def block_count_hint(keys: Iterable[str]) -> int:
    """A block count large enough for every index in the keys (names are enumerated up to it)."""
    found = [int(n) for k in keys for n in re.findall(r"(?<![A-Za-z])(\d+)(?=[._])", k) if len(n) <= 3]
    return max([19, 39, *found]) + 1


class NameIndex:
    """Every alias of every LoRA-targetable module (and norm parameter) of a DiT with n blocks."""

    def __init__(self, modules: dict[str, Target], params: dict[str, str]):
        self.modules = modules   # alias module name -> Target
        self.params = params     # alias parameter key -> official parameter key

    def module(self, stem: str) -> Target | None:
        for candidate in _unprefixed(stem):
            found = self.modules.get(candidate)
            if found is not None:
                return found
        return None

    def param(self, key: str) -> str | None:
        for candidate in _unprefixed(key):
            found = self.params.get(candidate)
            if found is not None:
                return found
        return None


def _unprefixed(name: str) -> list[str]:
    """The name and every version of it with known container prefixes stripped (nested too)."""
    out, frontier = [name], [name]
    while frontier:
        current = frontier.pop()
        for prefix in PREFIXES:
            if current.startswith(prefix) and len(current) > len(prefix):
                stripped = current[len(prefix):]
                if stripped not in out:
                    out.append(stripped)
                    frontier.append(stripped)
    return out


@lru_cache(maxsize=4)
def name_index(blocks: int) -> NameIndex:
    """The index for a DiT with `blocks` double, single and refiner blocks (names only)."""
    layers, params = _official_names(blocks)
    aliases: dict[str, Target] = {}
    ambiguous: set[str] = set()

    def add(alias: str, target: Target) -> None:
        if alias in ambiguous:
            return
        known = aliases.get(alias)
        if known is not None and (known.module, known.part) != (target.module, target.part):
            ambiguous.add(alias)  # two modules share this spelling: never guess between them
            del aliases[alias]
            return
        if known is None or _rank(target) < _rank(known):
            aliases[alias] = target

    for module in layers:
        comfy = official_to_comfy(module + ".weight")[: -len(".weight")]
        named = [(module, Target(module, naming=OFFICIAL)), (comfy, Target(module, naming=COMFY))]
        parts = diffusers_parts(module)
        if parts is not None:
            for i, name in enumerate(parts.modules):
                named.append((name, Target(module, i, len(parts.modules), parts.swap_halves, DIFFUSERS)))
        for name, target in named:
            add(name, target)
            add(name.replace(".", "_"), replace(target, underscored=True))
    if ambiguous:
        log.debug("LoRA names dropped as ambiguous: %s", sorted(ambiguous)[:8])
    return NameIndex(aliases, _param_aliases(params))


def _rank(target: Target) -> int:
    # When official and ComfyUI spellings coincide, call it official.
    return (OFFICIAL, COMFY, DIFFUSERS).index(target.naming) + (3 if target.underscored else 0)


def _param_aliases(params: list[str]) -> dict[str, str]:
    """Norm parameter keys (trained norms saved with a LoRA) in every dotted naming."""
    out = {}
    for key in params:
        out[key] = key
        out[official_to_comfy(key)] = key
        module, _, leaf = key.rpartition(".")
        parts = diffusers_parts(module)
        if parts is not None and not parts.fused and not parts.swap_halves:
            out[f"{parts.modules[0]}.{leaf}"] = key
    return out


@lru_cache(maxsize=1)
def _template_names() -> tuple[list[str], list[str]]:
    """Module and parameter names of a one-block-each DiT (built on meta: names only)."""
    config = DiTConfig(hidden_size=64, heads=2, double_blocks=1, single_blocks=1, refiner_blocks=1,
                       text_dim=64, pooled_text_dim=32, rope_dims=(8, 12, 12))
    with torch.device("meta"):
        model = HunyuanVideoTransformer(config)
    layers = [name for name, m in model.named_modules() if isinstance(m, CastWeights)]
    # Only norm scales may come as full tensors (trained with `train_norm_layers`, SPEC 7.4);
    # a full Linear weight in a "LoRA" means a model checkpoint was picked by mistake.
    norms = [f"{name}.{leaf}" for name, m in model.named_modules() if not isinstance(m, CastWeights)
             for leaf, _ in m.named_parameters(recurse=False)]
    return layers, norms


_BLOCK_GROUPS = ("double_blocks.0.", "single_blocks.0.", "txt_in.individual_token_refiner.blocks.0.")


def _official_names(blocks: int) -> tuple[list[str], list[str]]:
    layers, params = _template_names()
    return _expand(layers, blocks), _expand(params, blocks)


def _expand(names: list[str], blocks: int) -> list[str]:
    out = []
    for name in names:
        group = next((g for g in _BLOCK_GROUPS if name.startswith(g)), None)
        if group is None:
            out.append(name)
            continue
        head, rest = group[:-2], name[len(group):]
        out.extend(f"{head}{i}.{rest}" for i in range(blocks))
    return out
