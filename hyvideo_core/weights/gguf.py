"""GGUF checkpoints (city96's HunyuanVideo conversion, arch `hyvid`) as a lazy TensorSource.

The file is memory-mapped by `gguf.GGUFReader`. Keys are the official tensor names (a
`model.diffusion_model.` prefix is tolerated by the layout detection). Shapes are the logical
torch shapes: reversed ggml dims, or the `comfy.gguf.orig_shape.<name>` metadata when present
(5-D tensors stored flattened).

- `dtype(key)`: float32/float16/bfloat16 for unquantised tensors; torch.uint8 for quantised ones
  (what is stored: raw blocks). The loader therefore computes in bf16 for quantised files.
- `get(key)`: the tensor's values (quantised ones dequantised to float32), so any storage policy
  can read a GGUF file.
- `raw(key)`: the stored bytes and quant type, for `GgufStorage` which keeps them quantised.

`reader.open_tensors` opens .gguf files with `open_gguf` (importing this module on first use).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q, GGUFReader

from ..errors import CheckpointError
from .gguf_dequant import check_supported, dequantize
from .source import TensorSource

log = logging.getLogger(__name__)

ARCH = "hyvid"
# city96's converter: hyvid when both of these exist (SPEC 9.1).
_ARCH_KEYS = ("double_blocks.0.img_attn_proj.weight", "txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight")
_PLAIN = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}
_ORIG_SHAPE = "comfy.gguf.orig_shape."
_PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class RawTensor:
    """Stored bytes of one GGUF tensor: `data` is uint8 [rows, bytes per row] (a file view)."""

    data: torch.Tensor
    qtype: Q
    shape: tuple[int, ...]  # logical torch shape


class GGUFSource(TensorSource):
    memory_mapped = True  # lazy.release_pages may drop pages of tensors read from here

    def __init__(self, path: Path):
        super().__init__()
        self.name = str(path)
        try:
            # 'c' = copy-on-write mapping: writable views for torch, the file is never modified.
            self._reader = GGUFReader(str(path), mode="c")
            self.arch = _field_text(self._reader, "general.architecture")
            self._tensors = {t.name: t for t in self._reader.tensors}
        except Exception as exc:  # noqa: BLE001 - the gguf reader fails in many ways on a cut or damaged file
            # (IndexError when the file ends inside its tensor table, ValueError, KeyError, OSError, ...)
            size = path.stat().st_size if path.exists() else 0
            raise CheckpointError(
                f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc}; the file has {size} bytes). It is "
                "probably truncated (an interrupted download), corrupt or uses an unknown quant type: download it "
                "again.") from exc
        self._check_arch()
        self.metadata = {"general.architecture": self.arch or ""}
        for name, t in self._tensors.items():
            self._shapes[name] = self._logical_shape(name, t)
            self._dtypes[name] = _PLAIN.get(t.tensor_type, torch.uint8)

    def qtype(self, key: str) -> Q:
        return self._tensors[key].tensor_type

    def raw(self, key: str) -> RawTensor:
        t = self._tensors[key]
        check_supported(t.tensor_type, f"{self.name}: tensor '{key}'")
        data = torch.from_numpy(np.asarray(t.data)).reshape(-1).view(torch.uint8)
        return RawTensor(data, t.tensor_type, self._shapes[key])

    def _read(self, key: str) -> torch.Tensor:
        raw = self.raw(key)
        if raw.qtype in _PLAIN:
            return raw.data.view(_PLAIN[raw.qtype]).reshape(raw.shape)
        return dequantize(raw.data, raw.qtype, raw.shape)

    def _check_arch(self) -> None:
        names = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k for k in self._tensors}
        if self.arch == ARCH or (self.arch in (None, "pig", "cow") and all(k in names for k in _ARCH_KEYS)):
            return
        found = f"architecture '{self.arch}'" if self.arch else "no general.architecture field and no HunyuanVideo keys"
        raise CheckpointError(
            f"{self.name}: GGUF file of {found}, not HunyuanVideo ('{ARCH}'). Choose a HunyuanVideo "
            "GGUF (e.g. hunyuan-video-t2v-720p-Q8_0.gguf) in models/diffusion_models or models/unet.")

    def _logical_shape(self, name: str, t) -> tuple[int, ...]:
        stored = tuple(reversed([int(d) for d in t.shape]))
        field = self._reader.get_field(_ORIG_SHAPE + name)
        if field is None:
            return stored
        shape = tuple(int(v) for v in field.contents())
        if int(np.prod(shape)) != int(np.prod(stored)):
            raise CheckpointError(
                f"{self.name}: tensor '{name}' has {int(np.prod(stored))} elements but its "
                f"{_ORIG_SHAPE}{name} metadata says {list(shape)}. The file is corrupt.")
        return shape


def _field_text(gguf_reader: GGUFReader, name: str) -> str | None:
    field = gguf_reader.get_field(name)
    if field is None:
        return None
    return bytes(field.parts[field.data[-1]]).decode("utf-8", errors="replace")


def open_gguf(path) -> GGUFSource:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return GGUFSource(Path(path))
