"""A LoRA file against one model: which of its modules exist here, whether the shapes fit, and
the patch-embed width the LoRA asks for (SPEC 7.2). Nothing here changes the weights except
the widening itself."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from ..conditioning.keyframes import widen_patch_embed
from ..errors import CheckpointError, InvalidInputError, finite_number
from ..model.ops import casting_layers
from .block_strengths import BlockStrengths
from .formats import LoraFile, ModuleLora, UnmatchedKey, load_lora
from .snapshot import LoraState

log = logging.getLogger(__name__)

PATCH_EMBED = "img_in.proj"


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA in the stack: its file, strength and optional per-block strengths."""

    lora: LoraFile
    strength: float = 1.0
    blocks: BlockStrengths | None = None

    def __post_init__(self):
        name = getattr(self.lora, "name", repr(self.lora))
        if not isinstance(self.lora, LoraFile):
            raise InvalidInputError(f"LoRA {str(name)[:80]}: expected a LoraFile (from load_lora), got "
                                    f"{type(self.lora).__name__}.")
        strength = finite_number(f"LoRA {name}: strength", self.strength,
                                 "Give a finite number (1 = as trained, 0 = off, negative inverts it).")
        object.__setattr__(self, "strength", strength)
        if self.blocks is not None and not isinstance(self.blocks, BlockStrengths):
            raise InvalidInputError(f"LoRA {name}: block strengths must be BlockStrengths (or its text form, "
                                    f"through apply_loras), got {type(self.blocks).__name__}.")

    def multiplier(self, module: str) -> float:
        return self.strength * (1.0 if self.blocks is None else self.blocks.multiplier(module))


@dataclass
class ResolvedLora:
    """A LoRA's modules that exist in this model, shapes checked, with what was left out."""

    spec: LoraSpec
    patches: dict[str, ModuleLora]       # modules of this model, shapes checked
    norms: dict[str, torch.Tensor]       # norm parameter key -> trained tensor
    unmatched: list[UnmatchedKey]
    notes: list[str]

    def multiplier(self, module: str) -> float:
        return self.spec.multiplier(module)


def resolve_lora(model: nn.Module, spec: LoraSpec) -> ResolvedLora:
    """Match the LoRA's modules to this model's layers; shapes that do not fit are an error
    (a LoRA for another model size), modules the model lacks are reported."""
    lora = spec.lora
    c = model.config
    if spec.blocks is not None:
        spec.blocks.check(c.double_blocks, c.single_blocks)
    layers = casting_layers(model)
    patches, unmatched, wrong, notes = {}, [], [], []
    for module, patch in lora.modules.items():
        layer = layers.get(module)
        if layer is None:
            unmatched.extend(UnmatchedKey(k, f"{module} is not in this model ({c.double_blocks} double, "
                                          f"{c.single_blocks} single blocks)") for k in patch.keys)
            continue
        problem = _shape_problem(module, patch, layer, c.out_channels)
        if problem:
            wrong.append(problem)
        else:
            patches[module] = _fit_patch_embed(module, patch, layer, notes)
    norms = {}
    for key, tensor in lora.full_weights.items():
        current = _parameter(model, key)
        if current is None:
            unmatched.append(UnmatchedKey(key, "parameter not in this model"))
        elif tuple(current.shape) != tuple(tensor.shape):
            wrong.append(f"{key}: LoRA {list(tensor.shape)}, model {list(current.shape)}")
        else:
            norms[key] = tensor
    if wrong:
        raise CheckpointError(
            f"{lora.source}: LoRA shapes do not fit this model (hidden size {c.hidden_size}): "
            f"{'; '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''} ({len(wrong)} modules). "
            "It was trained for a different model; use a HunyuanVideo 13B LoRA with the 13B model.")
    if not patches and not norms:
        first = ", ".join(u.key for u in unmatched[:5])
        raise CheckpointError(
            f"{lora.source}: no LoRA key matches a module of this model (first keys: {first}). "
            "Is the LoRA for another model or model size?")
    for u in unmatched:
        log.warning("LoRA %s: key %s not applied: %s", lora.name, u.key, u.reason)
    return ResolvedLora(spec, patches, norms, [*lora.unmatched, *unmatched], notes)


def _shape_problem(module: str, patch: ModuleLora, layer: nn.Module, plain_channels: int) -> str | None:
    shape = weight_shape(layer)
    in_shape = patch.in_shape
    plain_embed = module == PATCH_EMBED and in_shape[0] == plain_channels and in_shape[1:] == shape[2:]
    fits_in = in_shape == shape[1:] or plain_embed
    if not fits_in or patch.rows_needed > shape[0]:
        return f"{module}: LoRA writes {patch.rows_needed} rows of input {list(in_shape)}, model weight is {list(shape)}"
    return None


def _fit_patch_embed(module: str, patch: ModuleLora, layer: nn.Module, notes: list[str]) -> ModuleLora:
    """A patch-embed LoRA narrower than the layer (a text-to-video LoRA on a keyframe model)
    acts on the first channels, the noisy latent; its A is zero for the conditioning channels."""
    have, want = patch.in_shape[0], weight_shape(layer)[1]
    if module != PATCH_EMBED or have >= want:
        return patch
    notes.append(f"patch-embed LoRA has {have} input channels, the model {want}: applied to channels 0-{have - 1}")
    parts = tuple(replace(p, down=nn.functional.pad(p.down, (0, 0, 0, 0, 0, 0, 0, want - have))) for p in patch.parts)
    return replace(patch, parts=parts)


def widen_for_loras(model: nn.Module, state: LoraState, specs: list[LoraSpec]) -> tuple[int, int] | None:
    """Widen the patch embed to the input channels a LoRA's patch-embed A has (SPEC 7.2): the
    shapes decide, never the file name. A LoRA with the plain width (16) fits any model."""
    have, plain = model.config.in_channels, model.config.out_channels
    conditioning = [(s.lora.name, s.lora.patch_embed_channels) for s in specs
                    if s.lora.patch_embed_channels not in (None, plain)]
    if not conditioning:
        return None
    if len({c for _, c in conditioning}) > 1:
        raise InvalidInputError(
            f"LoRAs ask for different patch-embed input widths {conditioning}; only one conditioning LoRA "
            "(e.g. the keyframe LoRA) can be applied at a time.")
    name, channels = conditioning[0]
    if channels == have:
        return None
    if have != plain or channels < plain:
        raise InvalidInputError(
            f"LoRA {name}: its patch-embed LoRA takes {channels} input channels, but this model's patch embed "
            f"takes {have} (variant {model.config.variant}) and can only be widened from {plain}. Use the "
            "text-to-video base model with this LoRA, or remove the other conditioning LoRA first.")
    state.snapshot(PATCH_EMBED, model.get_submodule(PATCH_EMBED))
    widen_patch_embed(model, channels)
    return have, channels


# -- helpers ---------------------------------------------------------------------------------------
def weight_shape(layer: nn.Module) -> tuple[int, ...]:
    """The layer's logical weight shape, whatever its storage (GGUF keeps raw bytes in `weight`)."""
    if isinstance(layer, nn.Conv3d):
        return (layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)
    return (layer.out_features, layer.in_features)


def _parameter(model: nn.Module, key: str):
    module_name, _, leaf = key.rpartition(".")
    try:
        return getattr(model.get_submodule(module_name), leaf)
    except AttributeError:
        return None


def as_spec(item) -> LoraSpec:
    if isinstance(item, LoraSpec):
        return replace(item, blocks=as_blocks(item.blocks))
    if isinstance(item, tuple):
        if not 1 <= len(item) <= 3:
            raise InvalidInputError(f"LoRA entry {item!r}: expected (lora, strength[, block strengths]).")
        lora = item[0] if isinstance(item[0], LoraFile) else load_lora(item[0])
        strength = item[1] if len(item) > 1 else 1.0
        return LoraSpec(lora, strength, as_blocks(item[2] if len(item) > 2 else None))
    if isinstance(item, LoraFile):
        return LoraSpec(item)
    return LoraSpec(load_lora(item))


def as_blocks(blocks) -> BlockStrengths | None:
    if blocks is None or isinstance(blocks, BlockStrengths):
        return blocks
    if isinstance(blocks, str):
        return BlockStrengths.parse(blocks) if blocks.strip() else None
    raise InvalidInputError(f"block strengths: expected BlockStrengths or text, got {type(blocks).__name__}.")


