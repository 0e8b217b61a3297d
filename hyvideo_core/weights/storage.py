"""Weight storage policies for `load_transformer(..., storage=...)` and the `storage_for` factory.

A policy has `.name`, `load(model, layout, source, dtype, device)` and, optionally,
`default_dtype(layout, source)` (the compute dtype when the caller gives none). Every policy
here streams the checkpoint tensor by tensor into memory of its own and hands the source's
memory-mapped pages back after each tensor (see lazy.py), so RAM peaks at the model plus about
one tensor, never at twice the file. Each file tensor is checked for NaN/inf as it streams in, once
(`reader.check_finite`: a sum per tensor, an elementwise test only when that sum is not finite;
fp8 bytes by their NaN/inf bit patterns, and the fp8 scales), so a damaged file is refused at load
naming its first bad tensor instead of sampling a black video.

Formats (`FORMATS`, the values the CLI and nodes offer):
- "auto": the file's own format: GGUF quants stay quantised, fp8 files stay fp8 with their own
  scales, anything else is stored in the compute dtype;
- "bf16" | "fp16" | "fp32": plain tensors in that dtype (fp8 files are dequantised with their scales);
- "fp8_e4m3fn" | "fp8_e5m2": block Linear weights cast to fp8 (scale 1, like ComfyUI's
  weight_dtype) unless the file already holds that fp8 type, whose bytes and scales are kept;
- "fp8_scaled": e4m3fn with a per-tensor scale chosen on load (better precision than plain casting);
- "gguf": keep a .gguf file's quantised bytes (the file decides the quant types).
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ..runtime.placement import module_bytes
from .diffusers_names import swap_halves
from .dit_format import DiTLayout, Recipe
from .fp8 import FP8_DTYPES, Fp8Codec, dequantize_tensor, install_fp8, quantize
from .fp8_files import file_scales
from .quantised_layers import is_quantisable
from .lazy import is_mapped, owned, release_pages
from .reader import TensorSource, check_finite
from .storage_common import StorageReport, assign

log = logging.getLogger(__name__)

FORMATS = ("auto", "bf16", "fp16", "fp32", "fp8_e4m3fn", "fp8_e5m2", "fp8_scaled", "gguf")
PLAIN_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Every name a dtype argument accepts (case does not matter), for the DiT, the VAE and the text towers.
DTYPE_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
               "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def parse_dtype(value, parameter: str = "dtype") -> torch.dtype | None:
    """A compute dtype from a torch.dtype or one of DTYPE_NAMES ('bf16', 'half', 'torch.float32', ...);
    None stays None (the caller's default). Anything else is an InvalidInputError naming `parameter`."""
    if value is None:
        return None
    allowed = set(DTYPE_NAMES.values())
    if isinstance(value, torch.dtype):
        if value in allowed:
            return value
        raise InvalidInputError(f"{parameter}={value}: not a compute dtype; use torch.bfloat16, torch.float16 or "
                                "torch.float32 (or one of the names " + ", ".join(DTYPE_NAMES) + ").")
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("torch.")
        if name in DTYPE_NAMES:
            return DTYPE_NAMES[name]
    raise InvalidInputError(f"{parameter}={value!r}: unknown dtype; use one of {', '.join(DTYPE_NAMES)} "
                            "or torch.bfloat16 / torch.float16 / torch.float32.")


def storage_for(weight_format: str = "auto", *, fast_fp8: bool = False, scale_map=None):
    """The storage policy for a weight format name (see module docstring).

    fast_fp8: allow the torch._scaled_mm path on CUDA devices that support it.
    scale_map: the official `_fp8_map.pt` when it is not next to the `_fp8.pt` file."""
    if weight_format == "auto":
        return AutoStorage(fast_fp8=fast_fp8, scale_map=scale_map)
    if weight_format in PLAIN_DTYPES:
        return CastStorage(PLAIN_DTYPES[weight_format], scale_map=scale_map)
    if weight_format in ("fp8_e4m3fn", "fp8_e5m2"):
        return Fp8Storage(getattr(torch, f"float8_{weight_format[4:]}"), scaled=False, fast=fast_fp8, scale_map=scale_map)
    if weight_format == "fp8_scaled":
        return Fp8Storage(torch.float8_e4m3fn, scaled=True, fast=fast_fp8, scale_map=scale_map)
    if weight_format == "gguf":
        from .gguf_storage import GgufStorage
        return GgufStorage()
    raise InvalidInputError(f"weight_format={weight_format!r} is unknown; choose one of {list(FORMATS)}.")


class StreamingStorage:
    """Shared loop: one official tensor at a time, source pages released after each."""

    name = "plain"
    scale_map = None  # an explicit official `_fp8_map.pt` (else looked up next to the file)

    def load(self, model: nn.Module, layout: DiTLayout, source: TensorSource, dtype, device) -> None:
        device = torch.device(device)
        self.report = StorageReport(self.name)
        self.scales = file_scales(layout, source, self.scale_map)
        for key, recipe in layout.recipes.items():
            parts = [source.get(k) for k in recipe.sources]
            for k, part in zip(recipe.sources, parts):
                check_finite(part, k, source.name)   # each tensor once, as it streams in
            self.store_tensor(model, key, recipe, parts, dtype, device)
            for k, part in zip(recipe.sources, parts):
                if is_mapped(source, k):
                    release_pages(part)
        self.report.stored_bytes = module_bytes(model)
        log.info("%s: %s", source.name, self.report.summary())

    def store_tensor(self, model, key, recipe, parts, dtype, device) -> None:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------
    def high_precision(self, recipe: Recipe, parts, key: str, dtype, device) -> torch.Tensor:
        """The official tensor in `dtype` on `device` (fp8 parts dequantised with their scales)."""
        module = key.rsplit(".", 1)[0]
        if len(parts) == 1 and parts[0].dtype not in FP8_DTYPES and not recipe.swap_halves:
            part = parts[0]
            return owned(part, device, dtype if part.is_floating_point() else part.dtype)
        if any(p.dtype in FP8_DTYPES for p in parts):
            self.report.dequantised += 1
            parts = [self.values(k, p, module) for k, p in zip(recipe.sources, parts)]
        tensor = parts[0] if len(parts) == 1 else torch.cat([p.to(parts[0].dtype) for p in parts], dim=0)
        tensor = swap_halves(tensor) if recipe.swap_halves else tensor
        return owned(tensor, device, dtype if tensor.is_floating_point() else tensor.dtype)

    def values(self, source_key: str, part: torch.Tensor, official_module: str) -> torch.Tensor:
        """float32 values of one source part (fp8 parts times their file scale)."""
        if part.dtype not in FP8_DTYPES:
            return part.float()
        return dequantize_tensor(part, self.weight_scale(source_key, official_module).to(part.device))

    def weight_scale(self, source_key: str, official_module: str) -> torch.Tensor:
        """The file's scale for an fp8 weight (1 when the file has none), checked to be finite."""
        scale = self.scales.weight_scale(source_key, official_module)
        if scale is None:
            if self.scales.marked:
                raise self.scales.missing(source_key, official_module)
            return torch.ones(())
        from_map = source_key.rsplit(".", 1)[0] not in self.scales.weight_keys
        check_finite(scale, f"scale of {source_key}", self.scales.map_file if from_map else self.scales.source.name)
        return scale


class CastStorage(StreamingStorage):
    """Plain tensors in one dtype."""

    def __init__(self, dtype: torch.dtype, scale_map=None):
        self.dtype = dtype
        self.scale_map = scale_map
        self.name = {v: k for k, v in PLAIN_DTYPES.items()}[dtype]

    def default_dtype(self, layout, source) -> torch.dtype:
        return self.dtype

    def store_tensor(self, model, key, recipe, parts, dtype, device) -> None:
        assign(model, key, self.high_precision(recipe, parts, key, self.dtype, device))
        self.report.plain += 1


class Fp8Storage(StreamingStorage):
    """Block Linear weights in fp8 (see quantised_layers.py), the rest in the compute dtype."""

    def __init__(self, fp8_dtype: torch.dtype, scaled: bool, fast: bool = False, scale_map=None):
        self.fp8_dtype = fp8_dtype
        self.scaled = scaled
        self.scale_map = scale_map
        self.codec = Fp8Codec(fast=fast)
        plain_name = f"fp8{str(fp8_dtype)[len('torch.float8'):]}"  # fp8_e4m3fn / fp8_e5m2
        if scaled:
            self.name = "fp8_scaled" if fp8_dtype == torch.float8_e4m3fn else plain_name + "_scaled"
        else:
            self.name = plain_name

    def load(self, model, layout, source, dtype, device) -> None:
        if torch.device(device).type == "mps":
            raise InvalidInputError(
                f"weight_format={self.name!r}: Apple MPS has no float8 tensors. Load fp8 files with "
                "weight_format='bf16' (dequantised), or use a GGUF file (e.g. Q8_0) for small weights.")
        super().load(model, layout, source, dtype, device)

    def store_tensor(self, model, key, recipe, parts, dtype, device) -> None:
        shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        if not is_quantisable(key, shape):
            assign(model, key, self.high_precision(recipe, parts, key, dtype, device))
            self.report.plain += 1
            return
        module_name = key.rsplit(".", 1)[0]
        layer = model.get_submodule(module_name)
        source_key = recipe.sources[0]
        if len(parts) == 1 and parts[0].dtype == self.fp8_dtype:
            # The file's own fp8 bytes and scales, untouched.
            scale = self.weight_scale(source_key, module_name)
            scale_in = self.scales.input_scale(source_key)
            if scale_in is not None:
                check_finite(scale_in, f"input scale of {source_key}", self.scales.source.name)
            install_fp8(layer, owned(parts[0], device), scale.to(device),
                        self.codec, None if scale_in is None else scale_in.to(device))
            self.report.kept += 1
            return
        values = [self.values(k, p.to(device), module_name) for k, p in zip(recipe.sources, parts)]
        weight = values[0] if len(values) == 1 else torch.cat(values, dim=0)
        weight = swap_halves(weight) if recipe.swap_halves else weight
        q, scale = quantize(weight, self.fp8_dtype, scaled=self.scaled)
        install_fp8(layer, q, scale, self.codec)
        self.report.quantised += 1


class AutoStorage:
    """Keep the file's own format (decided when the source is known)."""

    name = "auto"

    def __init__(self, fast_fp8: bool = False, scale_map=None):
        self.fast_fp8 = fast_fp8
        self.scale_map = scale_map
        self.resolved = None

    def choose(self, layout: DiTLayout, source: TensorSource):
        from .gguf import GGUFSource
        if isinstance(source, GGUFSource):
            from .gguf_storage import GgufStorage
            return GgufStorage()
        fp8 = [source.dtype(r.sources[0]) for k, r in layout.recipes.items()
               if is_quantisable(k, r.shape(source)) and source.dtype(r.sources[0]) in FP8_DTYPES]
        if fp8:
            scaled = file_scales(layout, source, self.scale_map).marked
            return Fp8Storage(fp8[0], scaled=scaled, fast=self.fast_fp8, scale_map=self.scale_map)
        return None

    def default_dtype(self, layout: DiTLayout, source: TensorSource):
        chosen = self.choose(layout, source)
        return getattr(chosen, "default_dtype", lambda *_: None)(layout, source) if chosen else None

    def load(self, model, layout, source, dtype, device) -> None:
        self.resolved = self.choose(layout, source) or CastStorage(dtype, scale_map=self.scale_map)
        self.resolved.load(model, layout, source, dtype, device)
        self.name = f"auto:{self.resolved.name}"
        self.report = self.resolved.report
