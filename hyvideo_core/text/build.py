"""Fill a tower built on the meta device with the tensors of a checkpoint, one at a time.

Each tensor is read from the (memory-mapped) source and converted straight to its storage
dtype on the target device, so the checkpoint is never held twice in RAM. The same code
serves every layout: the checkpoint key of a parameter is `file_prefix + name`, where the
prefix is found from an anchor key ('model.' for a LlamaForCausalLM folder and for
ComfyUI's llava_llama3 files, 'language_model.model.' for a whole LLaVA folder,
'text_model.' for CLIP, 'text_encoders.llama.transformer.model.' in ComfyUI checkpoints).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ..errors import CheckpointError, UnknownFormatError
from ..model import ops
from ..weights.identify import describe
from ..weights.reader import DictSource, TensorSource, check_finite
from ..weights.fp8 import Fp8Codec, dequantize_tensor, quantize
from .precision import is_fp8

log = logging.getLogger(__name__)

SCALE_SUFFIXES = ("scale_weight", "weight_scale")
# Present in scaled-fp8 files but not needed to dequantise: the format marker, and input
# scales used only by fp8 matmuls.
FP8_SIDECAR = re.compile(r"(^|\.)(scaled_fp8|scale_input|input_scale)$")


@dataclass(frozen=True)
class TowerLayout:
    kind: str            # "Llama" or "CLIP"
    anchor: str          # a key every checkpoint of this kind has, without prefix
    marker: str          # a second key that tells the tower from look-alikes (vision towers)
    argument: str        # the load_text_encoder argument that takes this file


LLAMA_LAYOUT = TowerLayout("Llama", "layers.0.self_attn.q_proj.weight", "embed_tokens.weight", "llm")
CLIP_LAYOUT = TowerLayout("CLIP", "encoder.layers.0.mlp.fc1.weight", "embeddings.token_embedding.weight", "clip")


@dataclass
class BuildReport:
    source: str
    prefix: str
    loaded: int = 0
    fp8_layers: int = 0
    unused: list[str] = field(default_factory=list)       # by design (dropped layers, lm_head, ...)
    unexpected: list[str] = field(default_factory=list)   # inside the tower, matched by nothing

    def summary(self) -> str:
        fp8 = f", {self.fp8_layers} linears in fp8" if self.fp8_layers else ""
        return (f"{self.source}: {self.loaded} tensors (prefix {self.prefix!r}){fp8}, "
                f"{len(self.unused)} unused by design, {len(self.unexpected)} unexpected")


def find_prefix(source: TensorSource, layout: TowerLayout) -> str:
    for key in source.keys():
        if key.endswith(layout.anchor):
            prefix = key[: -len(layout.anchor)]
            if f"{prefix}{layout.marker}" in source:
                return prefix
    other = CLIP_LAYOUT if layout is LLAMA_LAYOUT else LLAMA_LAYOUT
    hint = f" Pass it as `{other.argument}=` instead." if _has_layout(source, other) else ""
    raise UnknownFormatError(
        f"{source.name}: not a {layout.kind} text encoder: it looks like {describe(source.keys())} "
        f"(no '...{layout.anchor}' with '...{layout.marker}').{hint} Expected for "
        f"`{layout.argument}`: " + ("llava_llama3_fp16/fp8_scaled.safetensors or a llava-llama-3-8b "
                                    "text_encoder folder." if layout is LLAMA_LAYOUT else
                                    "clip_l.safetensors or a clip-vit-large-patch14 folder."))


def _has_layout(source: TensorSource, layout: TowerLayout) -> bool:
    return any(k.endswith(layout.anchor) and f"{k[:-len(layout.anchor)]}{layout.marker}" in source
               for k in source.keys())


def file_scale(source: TensorSource, weight_key: str) -> torch.Tensor | None:
    base = weight_key[: -len("weight")]
    for suffix in SCALE_SUFFIXES:
        if f"{base}{suffix}" in source:
            return source.get(f"{base}{suffix}")
    return None


def fill(model: nn.Module, source: TensorSource, prefix: str, dtype: torch.dtype, device,
         fp8_dtype: torch.dtype | None = None, is_unused: Callable[[str], bool] | None = None,
         module_prefix: str = "") -> BuildReport:
    """Assign every parameter of `model` from `source[prefix + name]` (`module_prefix`, a
    prefix of the module's own parameter names, e.g. 'text_model.' in older transformers, is
    replaced by `prefix`).

    Casting linears (ops.Linear) keep their weight in `fp8_dtype` when given; everything else
    is stored in `dtype`. Missing or mis-shaped tensors raise; keys under the prefix that no
    parameter uses are reported (those `is_unused` accepts as unused by design).
    """
    report = BuildReport(source.name, prefix)
    copy = isinstance(source, DictSource)  # never alias a caller's tensors
    plan = [(name, param, prefix + name[len(module_prefix):]) for name, param in model.named_parameters()]
    _check_plan(source, model, plan)  # before reading anything: a bad file fails in milliseconds
    consumed = set()
    for name, param, key in plan:
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        scale = file_scale(source, key)
        if scale is not None:
            consumed.update(f"{key[:-len('weight')]}{s}" for s in SCALE_SUFFIXES)
        keep_fp8 = fp8_dtype is not None and attr == "weight" and isinstance(owner, ops.Linear)
        raw = source.get(key)
        check_finite(raw, key, source.name)          # one cheap reduction per tensor, as it streams in
        if scale is not None:
            check_finite(scale, f"{key} (its fp8 scale)", source.name)
        tensor = _stored(raw, scale, dtype, fp8_dtype if keep_fp8 else None, owner)
        owner._parameters[attr] = nn.Parameter(tensor.to(device, copy=copy), requires_grad=False)
        report.fp8_layers += int(keep_fp8)
        consumed.add(key)
        report.loaded += 1
    _sort_leftovers(source, prefix, consumed, is_unused, report)
    return report


def _check_plan(source: TensorSource, model: nn.Module, plan) -> None:
    missing = [key for _, _, key in plan if key not in source]
    if missing:
        raise CheckpointError(
            f"{source.name}: {len(missing)} tensors of the {type(model).__name__} are missing, e.g. "
            f"{missing[:4]}. The file is incomplete or has a different layout.")
    for _, param, key in plan:
        if tuple(source.shape(key)) != tuple(param.shape):
            raise CheckpointError(
                f"{source.name}: tensor '{key}' has shape {list(source.shape(key))}, the model "
                f"config expects {list(param.shape)}. The file does not match the config (wrong "
                "file, or a config override that does not fit it).")


_FP8 = Fp8Codec()


def _stored(raw: torch.Tensor, scale, dtype, fp8_dtype, owner: nn.Module) -> torch.Tensor:
    """The tensor as the tower keeps it: in `dtype`, or fp8 with its scale and the fp8 codec."""
    scale = torch.ones(()) if scale is None else scale
    if fp8_dtype is None:
        return dequantize_tensor(raw, scale).to(dtype) if is_fp8(raw.dtype) else raw.to(dtype)
    if raw.dtype == fp8_dtype:
        q = raw  # kept as the file stores it: no requantisation error
    else:
        q, scale = quantize(dequantize_tensor(raw, scale) if is_fp8(raw.dtype) else raw, fp8_dtype)
    owner.register_buffer("scale_weight", scale.float(), persistent=True)
    owner.codec = _FP8
    return q


def _sort_leftovers(source, prefix, consumed, is_unused, report) -> None:
    for key in source.keys():
        if key in consumed or FP8_SIDECAR.search(key):
            continue
        inner = key[len(prefix):] if key.startswith(prefix) else None
        if inner is None or (is_unused is not None and is_unused(inner)):
            report.unused.append(key)
        else:
            report.unexpected.append(key)
    if report.unexpected:
        log.warning("%s: %d tensors were not used by the text encoder and are not expected there, "
                    "e.g. %s", source.name, len(report.unexpected), report.unexpected[:4])
    log.info("%s", report.summary())


def module_prefix(model: nn.Module, layout: TowerLayout) -> str:
    """The part of the model's own parameter names before the layout's anchor."""
    for name, _ in model.named_parameters():
        if name.endswith(layout.anchor):
            return name[: -len(layout.anchor)]
    raise CheckpointError(
        f"{type(model).__name__}: has no parameter '...{layout.anchor}' (a transformers version we do not know?).")


def check_materialized(model: nn.Module, source_name: str) -> None:
    empty = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if empty:
        raise CheckpointError(f"{source_name}: these tensors were never filled: {empty[:6]}.")
