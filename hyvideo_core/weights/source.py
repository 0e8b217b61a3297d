"""`TensorSource`, the lazy read-only view of a checkpoint's named tensors that every container
(reader.py: safetensors, torch files, folders, dicts; gguf.py: GGUF) implements.

Its own module, below the containers, so that reader.py can open a GGUF file through gguf.py
without gguf.py importing reader.py back.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import CheckpointError


class TensorSource:
    """Read-only, lazy view of named tensors. Subclasses fill `_shapes`/`_dtypes` and `_read`."""

    name: str = "<tensors>"
    metadata: Mapping[str, str] = {}

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, torch.dtype] = {}

    def keys(self) -> list[str]:
        return list(self._shapes)

    def __contains__(self, key: str) -> bool:
        return key in self._shapes

    def __len__(self) -> int:
        return len(self._shapes)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def dtype(self, key: str) -> torch.dtype:
        return self._dtypes[key]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def get(self, key: str) -> torch.Tensor:
        if key not in self._shapes:
            raise CheckpointError(f"{self.name}: tensor '{key}' is not in this checkpoint.")
        try:
            return self._read(key)
        except CheckpointError:
            raise
        except Exception as exc:  # a file truncated after its header was read
            raise CheckpointError(
                f"{self.name}: tensor '{key}' could not be read ({exc}). The file is probably "
                "truncated or corrupt: download it again.") from exc

    def _read(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles; the default source holds none."""
