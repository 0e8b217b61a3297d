"""Same model, same settings on every rank: checked with one all-gather before the first step.

A rank with another DiT file, format or LoRA set computes different tokens and the run is
garbage (or deadlocks when shapes differ), so `check_same_model` compares, across ranks:
- the caller's identity string (file path + size + format + LoRA files and strengths: what the
  run layer knows about how the model was loaded), and
- a cheap weight fingerprint: every parameter and buffer (runtime LoRA adapters included) by
  name, shape, dtype and 16 evenly spaced stored values, hashed (one device-to-host copy per
  device; fp8 / GGUF bytes are fingerprinted as stored).
"""
from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist

from ..errors import InvalidInputError

SAMPLES = 16


def weights_fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    tensors = sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items())
    values: dict[torch.device, list[torch.Tensor]] = {}
    for name, t in tensors:
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.is_meta or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1)
        k = min(SAMPLES, flat.numel())
        index = torch.arange(k, device=flat.device) * (flat.numel() - 1) // max(k - 1, 1)   # exact int64
        values.setdefault(flat.device, []).append(flat[index].float().double())
    for device in sorted(values, key=str):
        digest.update(torch.cat(values[device]).cpu().numpy().tobytes())
    return digest.hexdigest()


def gather_values(value, group=None) -> list:
    """Every rank's `value` (a small picklable object), by rank."""
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, value, group=group)
    return out


def check_same(name: str, value, group=None, hint: str = "") -> None:
    """Raise InvalidInputError on every rank when `value` differs between ranks."""
    values = gather_values(value, group)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        shown = "; ".join(f"rank {r}: {_short(values[r])}" for r in [0, *differ[:3]])
        raise InvalidInputError(
            f"parallel: {name} differs between ranks ({shown}); every rank must use the same {name}.{hint}")


def check_same_model(model: torch.nn.Module, identity: str | None = None, group=None) -> None:
    config = getattr(model, "config", None)
    mine = {"identity": identity, "config": repr(config), "weights": weights_fingerprint(model)}
    values = gather_values(mine, group)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if not differ:
        return
    parts = []
    for r in differ[:3]:
        what = [k for k in ("identity", "config", "weights") if values[r][k] != values[0][k]]
        detail = (f" (rank 0: {_short(values[0]['identity'])}; rank {r}: {_short(values[r]['identity'])})"
                  if "identity" in what else "")
        parts.append(f"rank {r} differs from rank 0 in its {' and '.join(what)}{detail}")
    raise InvalidInputError(
        "parallel: every rank must load the same model, but " + "; ".join(parts) + ". Load the same DiT file "
        "with the same weight format and the same LoRAs and strengths on every rank.")


def _short(value, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
