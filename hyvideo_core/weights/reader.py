"""Lazy access to the tensors of a checkpoint, whatever container holds them.

A `TensorSource` answers key / shape / dtype questions without reading tensor data, and
reads one tensor at a time, so loaders can convert tensor by tensor and a checkpoint is
never held twice in RAM. The container is recognised by its magic bytes, never by the
file name.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from safetensors import safe_open

from ..errors import CheckpointError, InvalidInputError
from .source import TensorSource

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class DictSource(TensorSource):
    """An in-memory state dict (tests, or a dict handed over by another library)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], name: str = "<state dict>"):
        super().__init__()
        self.name = name
        self._tensors = {}
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"{name}: entry '{key}' is a {type(value).__name__}, not a tensor. "
                    "Pass a flat mapping of names to tensors.")
            self._tensors[key] = value
            self._shapes[key] = tuple(value.shape)
            self._dtypes[key] = value.dtype

    def _read(self, key: str) -> torch.Tensor:
        return self._tensors[key]


class SafetensorsSource(TensorSource):
    """One .safetensors file, memory-mapped; tensors are read only when asked for."""

    def __init__(self, path: Path):
        super().__init__()
        self.name = str(path)
        _check_safetensors_header(path)
        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
            self.metadata = self._file.metadata() or {}
            for key in self._file.keys():
                sl = self._file.get_slice(key)
                self._shapes[key] = tuple(sl.get_shape())
                self._dtypes[key] = _SAFETENSORS_DTYPES.get(sl.get_dtype(), torch.uint8)
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({exc}). It is probably truncated or "
                "corrupt: download it again.") from exc

    def _read(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(key)


class ShardedSource(TensorSource):
    """Several sources seen as one (sharded safetensors described by an index json)."""

    def __init__(self, parts: Iterable[TensorSource], name: str):
        super().__init__()
        self.name = name
        self._owner: dict[str, TensorSource] = {}
        for part in parts:
            for key in part.keys():
                self._owner[key] = part
                self._shapes[key] = part.shape(key)
                self._dtypes[key] = part.dtype(key)

    def _read(self, key: str) -> torch.Tensor:
        return self._owner[key].get(key)


class TorchFileSource(DictSource):
    """A torch .pt/.pth/.bin checkpoint, loaded with weights_only=True (never executes pickles).

    Wrapping dicts used by Tencent ('module'), DeepSpeed and others ('state_dict', 'model')
    are unwrapped.
    """

    WRAPPER_KEYS = ("module", "state_dict", "model", "params_ema")

    def __init__(self, path: Path):
        try:
            obj = _torch_load(path)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path}: rejected: the file contains pickled objects that are not tensors, and "
                "it was not executed (weights_only loading). Convert it to safetensors with a "
                f"tool you trust. Detail: {str(exc).splitlines()[0]}") from exc
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint ({exc}). It is probably truncated or "
                "corrupt: download it again.") from exc
        super().__init__(_unwrap(obj, path), name=str(path))


def _torch_load(path: Path) -> object:
    # mmap avoids a second copy of the file in RAM; legacy (non-zip) files cannot be mapped.
    mmap = zipfile.is_zipfile(path)
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = [k for k in TorchFileSource.WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if not inner:
            raise CheckpointError(
                f"{path}: holds no tensors (top-level keys: {sorted(obj)[:8]}). Expected a state "
                "dict, possibly wrapped in 'module' or 'state_dict'.")
        obj = obj[inner[0]]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors.")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _check_safetensors_header(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: file is {size} bytes, too short to be safetensors.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len + 8 > size:
            raise CheckpointError(
                f"{path}: truncated safetensors file (header says {header_len} bytes, file has "
                f"{size}). Download it again.")
        try:
            header = json.loads(fh.read(header_len) or b"{}")
        except ValueError as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc}). Download it again.") from exc
    end = _header_end(path, header)
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file: tensors need {8 + header_len + end} bytes but "
            f"the file has {size}. Download it again.")


# fp8 bytes whose value is NaN (e4m3fn: S.1111.111) or NaN/inf (e5m2: S.11111.xx): the largest codes of
# each sign, so two max-reductions over the bytes find them (isfinite has no fp8 kernel).
_FP8_NON_FINITE = {torch.float8_e4m3fn: 0x7F, torch.float8_e5m2: 0x7C}


def has_non_finite(tensor: torch.Tensor) -> bool:
    """True if `tensor` holds a NaN or an infinity. Cheap enough to run on every tensor a loader
    streams in: a float tensor is summed first (a reduction runs ~10x faster than an elementwise
    test, and any NaN/inf makes the sum NaN/inf); only when the sum is not finite (a NaN/inf, or a
    sum that overflowed) is every element tested. fp8 bytes are tested through their bit patterns."""
    if tensor.dtype in _FP8_NON_FINITE:
        low = _FP8_NON_FINITE[tensor.dtype]
        raw = tensor.view(torch.uint8)
        if raw.numel() == 0:
            return False
        # positive codes: int8 view's max; negative codes (sign bit set): uint8 view's max.
        return int(raw.view(torch.int8).max()) >= low or int(raw.max()) >= 0x80 | low
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return False
    if bool(torch.isfinite(tensor.sum())):
        return False
    return not bool(torch.isfinite(tensor).all())


def check_finite(tensor: torch.Tensor, key: str, source_name: str) -> None:
    """A CheckpointError naming the file and the tensor when `tensor` holds NaN/inf values."""
    if has_non_finite(tensor):
        values = tensor.float() if tensor.dtype in _FP8_NON_FINITE else tensor
        bad = int((~torch.isfinite(values)).sum())
        raise CheckpointError(
            f"{source_name}: tensor '{key}' holds {bad} NaN/infinite value(s) of {tensor.numel()} (the first "
            "non-finite tensor in the file); a model with them produces NaN (black) videos. The file is damaged "
            "or was saved from a diverged training run: download or convert it again.")


def _header_end(path: Path, header: object) -> int:
    """The end of the data the header describes; every entry checked for the fields safetensors
    needs (dtype, shape, data_offsets = [begin, end]), so a malformed header is a CheckpointError."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header: a JSON {type(header).__name__}, not an object "
                              "of tensor entries. Download it again.")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                or offsets[0] > offsets[1] or not isinstance(entry.get("dtype"), str)
                or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise CheckpointError(
                f"{path}: corrupt safetensors header: entry {key!r} is {json.dumps(entry)[:120]}, not "
                '{"dtype": ..., "shape": [...], "data_offsets": [begin, end]}; the file is corrupt: download it again.')
        end = max(end, offsets[1])
    return end


def sniff(path: Path) -> str:
    """Container kind from magic bytes: 'safetensors', 'torch', 'gguf' or 'unknown'."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:2] == b"PK":
        return "torch"
    # Before the legacy-pickle test: a safetensors header length may start with byte 0x80.
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch"
    return "unknown"


def _open_gguf(path: Path) -> TensorSource:
    from .gguf import open_gguf  # on first use: only GGUF files need the gguf package's reader
    return open_gguf(path)


# The opener of each sniffed kind; another container adds its own here.
OPENERS: dict[str, Callable[[Path], TensorSource]] = {
    "safetensors": SafetensorsSource,
    "torch": TorchFileSource,
    "gguf": _open_gguf,
}


def open_tensors(source: object) -> TensorSource:
    """A TensorSource for a file, a folder of (sharded) safetensors, a state dict, or a source."""
    if isinstance(source, TensorSource):
        return source
    if isinstance(source, Mapping):
        return DictSource(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(
            f"checkpoint source: got a {type(source).__name__} ({str(source)[:60]!r}); give a file or folder "
            "path, a state dict of tensors or a TensorSource.")
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder.")
    if path.is_dir():
        return _open_folder(path)
    opener = OPENERS.get(sniff(path))
    if opener is None:
        raise CheckpointError(
            f"{path}: unrecognised file content (first bytes {_head(path)!r}); expected "
            "safetensors, a torch checkpoint or GGUF.")
    return opener(path)


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(8)


def _open_folder(path: Path) -> TensorSource:
    """A diffusers-style folder: an index json naming shards, or every .safetensors in it."""
    for sub in (path, path / "transformer", path / "vae"):
        index = sorted(sub.glob("*.safetensors.index.json"))
        if index:
            try:
                weight_map = json.loads(index[0].read_text())["weight_map"]
                files = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(
                    f"{index[0]}: not a readable shard index (expected {{\"weight_map\": {{tensor: shard file}}}}; "
                    f"{type(exc).__name__}: {exc}). Download the folder again.") from exc
            missing = [f for f in files if not (sub / f).exists()]
            if missing:
                raise CheckpointError(f"{index[0]}: shards missing from {sub}: {missing}")
            return ShardedSource((SafetensorsSource(sub / f) for f in files), name=str(sub))
        files = sorted(sub.glob("*.safetensors"))
        if files:
            return ShardedSource((SafetensorsSource(f) for f in files), name=str(sub))
    raise CheckpointError(
        f"{path}: folder holds no .safetensors files (looked in it and in transformer/, vae/).")
