"""`load_transformer`: any supported DiT file -> a ready HunyuanVideoTransformer.

The model is built on the meta device and every tensor is read from the (memory-mapped)
source straight into its target dtype and device, one at a time. How tensors are stored
(plain, fp8, GGUF) is a `storage` policy; the default keeps plain tensors in `dtype`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import CheckpointError, InvalidInputError
from ..model.attention import resolve_backend
from ..model.config import DiTConfig, infer_from_shapes, resolve
from ..model.transformer import HunyuanVideoTransformer
from .dit_format import DiTLayout, detect_layout
from .key_check import key_mismatches
from .reader import TensorSource, open_tensors
from .storage import parse_dtype, storage_for

log = logging.getLogger(__name__)

_REQUIRED_FOR_SHAPES = ("img_in.proj.weight", "txt_in.input_embedder.weight", "vector_in.in_layer.weight",
                        "final_layer.linear.weight", "time_in.mlp.0.weight")


@dataclass(frozen=True)
class LoadReport:
    source: str
    format: str
    prefix: str
    variant: str
    config: DiTConfig
    dtype: torch.dtype
    device: str
    attention: str
    storage: str
    tensors: int
    other_keys: int  # keys outside the DiT prefix (e.g. a VAE bundled in the same file)

    def summary(self) -> str:
        extra = f", ignored {self.other_keys} non-DiT keys" if self.other_keys else ""
        return (f"{self.source}: {self.format} layout{' (prefix ' + self.prefix + ')' if self.prefix else ''}, "
                f"variant {self.variant}, {self.config.double_blocks}+{self.config.single_blocks} blocks, "
                f"hidden {self.config.hidden_size}, {self.tensors} tensors as {self.storage} "
                f"({self.dtype}) on {self.device}, attention {self.attention}{extra}")


def load_transformer(source, *, config=None, dtype: torch.dtype | None = None, device="cpu",
                     attention: str = "auto", storage=None, attention_kernel=None) -> HunyuanVideoTransformer:
    """Load a HunyuanVideo DiT.

    source: a file (.safetensors, .pt/.pth, .gguf), a diffusers folder, or a state dict.
    config: a preset name, a dict (our field names or the reference constructor's), a
        DiTConfig, or None to infer from the tensor shapes (13B defaults for the rest).
    dtype: compute dtype: a torch dtype or a name ('bf16', 'fp16', 'half', 'fp32', ...; see
        weights.storage.parse_dtype); default: the checkpoint's float dtype (fp8 files compute in bf16).
    attention: 'auto' | 'sdpa' | 'flash' | 'sage'; an unavailable one fails here.
    storage: weight storage policy (default `storage_for("auto")`: fp8 and GGUF files stay
        quantised, anything else is stored in the compute dtype).
    """
    dtype = parse_dtype(dtype, "dtype")
    device = parse_device(device, "device")
    if storage is not None and not callable(getattr(storage, "load", None)):
        raise InvalidInputError(
            f"storage={storage!r}: not a weight storage policy; pass storage_for(<weight format>) "
            "(e.g. storage_for('fp8_e4m3fn')) or leave it unset.")
    backend = resolve_backend(attention, device, kernel=attention_kernel)  # fail before reading weights
    src = open_tensors(source)
    layout = detect_layout(src)
    shapes = layout.shapes(src)
    cfg = _config_for(config, shapes, src)
    storage = storage or storage_for("auto")
    preferred = getattr(storage, "default_dtype", None)  # e.g. storage_for("fp16") computes in fp16
    dtype = dtype or (preferred(layout, src) if preferred else None) or _default_dtype(layout, src)
    with torch.device("meta"):
        model = HunyuanVideoTransformer(cfg, dtype=dtype)
    _check_keys(model, layout, shapes, src)
    storage.load(model, layout, src, dtype, device)
    model.compute_dtype = dtype
    model.attention = backend
    model.eval().requires_grad_(False)
    model.load_report = LoadReport(src.name, layout.format, layout.prefix, cfg.variant, cfg, dtype, str(device),
                                   backend.name, storage.name, len(layout.recipes), layout.outside)
    log.info("Loaded DiT: %s", model.load_report.summary())
    return model


def parse_device(device, parameter: str = "device") -> torch.device:
    """A torch.device from a device or its name ('cpu', 'cuda', 'cuda:1', 'mps'); else an
    InvalidInputError naming the parameter."""
    if not isinstance(device, torch.device):
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise InvalidInputError(f"{parameter}={device!r}: not a device name; use 'cpu', 'cuda', 'cuda:1' or "
                                    "'mps'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"{parameter}={str(device)!r}: CUDA is not available in this torch build or on this "
                                "machine; use 'cpu'.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InvalidInputError(f"{parameter}={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                                f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    return device


def _config_for(config, shapes, src: TensorSource) -> DiTConfig:
    missing = [k for k in _REQUIRED_FOR_SHAPES if k not in shapes]
    if missing:
        raise CheckpointError(f"{src.name}: HunyuanVideo DiT tensors are missing: {missing}.")
    given = resolve(config)
    inferred = infer_from_shapes(shapes, base=given)
    if given is not None:
        # The variant (input channels) and guidance embedding are read from the file, always.
        return given.replace(in_channels=inferred.in_channels, variant=inferred.variant,
                             guidance_embed=inferred.guidance_embed)
    return inferred


def _default_dtype(layout: DiTLayout, src: TensorSource) -> torch.dtype:
    probe = layout.recipes.get("double_blocks.0.img_attn_qkv.weight") or layout.recipes["img_in.proj.weight"]
    found = probe.dtype(src)
    return found if found in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16


def _check_keys(model: nn.Module, layout: DiTLayout, shapes: dict, src: TensorSource) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = key_mismatches(expected, shapes, extra=layout.unknown)
    if problems:
        raise CheckpointError(
            f"{src.name}: does not match the HunyuanVideo DiT ({layout.format} layout, config "
            f"hidden={model.config.hidden_size}, blocks={model.config.double_blocks}+{model.config.single_blocks}): "
            + "; ".join(problems) + ". The file may be incomplete, for another model, or need a different config.")
