"""What every weight storage policy (storage.py, gguf_storage.py) shares: the report of what it
did, and putting a stored tensor into the model."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .diffusers_names import split_module_key


@dataclass
class StorageReport:
    """What a storage policy did with the checkpoint's tensors."""

    name: str
    plain: int = 0            # stored as plain tensors
    quantised: int = 0        # quantised on load (fp8)
    kept: int = 0             # kept in the file's quantised form (fp8 bytes + scales, GGUF quants)
    dequantised: int = 0      # quantised in the file but stored in high precision here
    stored_bytes: int = 0

    def summary(self) -> str:
        return (f"storage {self.name}: {self.kept} kept quantised, {self.quantised} quantised on load, "
                f"{self.dequantised} dequantised, {self.plain} plain; {self.stored_bytes / 1e9:.2f} GB")


def assign(model: nn.Module, key: str, tensor: torch.Tensor) -> None:
    """Replace a (meta) parameter or buffer by `tensor`."""
    module_path, leaf = split_module_key(key)
    module = model.get_submodule(module_path)
    if leaf in module._buffers:
        module._buffers[leaf] = tensor
    else:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
