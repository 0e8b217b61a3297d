"""3D rotary position embedding for image tokens (SPEC 1.4).

Positions are integer (t, h, w) indices on the patch grid; each axis a with d_a channels uses
frequencies theta^(-2j/d_a). Pairs are interleaved: pair i is channels (2i, 2i+1), so every
frequency is repeated twice along the last dim. Text tokens get no rotation.
"""
from __future__ import annotations

from functools import lru_cache

import torch


def rope_tables(grid: tuple[int, int, int], dims: tuple[int, ...], theta: float = 256.0,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of shape [T*H*W, sum(dims)], float32, rows in (t, h, w) raster order."""
    return _cached_tables(tuple(grid), tuple(dims), float(theta), str(device))


@lru_cache(maxsize=16)
def _cached_tables(grid, dims, theta, device):
    axes = [torch.arange(n, dtype=torch.float32) for n in grid]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(dims):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
        angles = torch.outer(positions[:, axis].double(), freqs).float()
        cos_parts.append(angles.cos().repeat_interleave(2, dim=1))
        sin_parts.append(angles.sin().repeat_interleave(2, dim=1))
    cos = torch.cat(cos_parts, dim=1).to(device)
    sin = torch.cat(sin_parts, dim=1).to(device)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, N, heads, head_dim] by the tables [N, head_dim]; computed in float32."""
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    cos = cos[:, None, :]
    sin = sin[:, None, :]
    return (xf * cos + rotated * sin).to(x.dtype)
