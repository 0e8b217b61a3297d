"""What ComfyUI's native socket types hold, so our outputs interoperate with native nodes:
IMAGE [frames, H, W, 3] float in 0..1, LATENT {"samples": [B, C, (T,) H, W]}, MASK [.., H, W]."""
from __future__ import annotations

import torch


def output_type_problem(kind: str, value) -> str | None:
    """None when `value` is a valid `kind`, else what is wrong (custom types are not checked)."""
    check = CHECKS.get(kind)
    return None if check is None else check(value)


def _image(value) -> str | None:
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[-1] != 3:
        return f"expected a tensor [frames, height, width, 3], got {_describe(value)}"
    if not value.is_floating_point():
        return f"expected floats in 0..1, got {value.dtype}"
    if value.numel() and (value.min() < 0 or value.max() > 1):
        return f"values outside 0..1 ({float(value.min()):.3f} .. {float(value.max()):.3f})"
    return None


def _latent(value) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("samples"), torch.Tensor):
        return f"expected a dict with a 'samples' tensor, got {_describe(value)}"
    if value["samples"].ndim not in (4, 5):
        return f"'samples' must be [B, C, H, W] or [B, C, T, H, W], got shape {tuple(value['samples'].shape)}"
    return None


def _mask(value) -> str | None:
    if not isinstance(value, torch.Tensor) or value.ndim not in (2, 3):
        return f"expected a tensor [H, W] or [frames, H, W], got {_describe(value)}"
    return None


def _scalar(expected):
    def check(value) -> str | None:
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        return None if ok else f"expected {expected}, got {_describe(value)}"
    return check


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} ({value.dtype})"
    return type(value).__name__


CHECKS = {"IMAGE": _image, "LATENT": _latent, "MASK": _mask, "INT": _scalar(int), "FLOAT": _scalar((int, float)),
          "STRING": _scalar(str), "BOOLEAN": _scalar(bool)}
