"""3D rotary position embedding for image tokens (SPEC 1.4).

Positions are integer (t, h, w) indices on the patch grid; each axis a with d_a channels uses
frequencies theta^(-2j/d_a). Pairs are interleaved: pair i is channels (2i, 2i+1), rotated by the
i-th angle (the reference's cos/sin tables repeat every angle twice). Text tokens get no rotation.
"""
from __future__ import annotations

from functools import lru_cache

import torch


def rope_freqs(grid: tuple[int, int, int], dims: tuple[int, ...], theta: float = 256.0,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The rotation of every image token as complex numbers, [T*H*W, 1, sum(dims)/2] complex64
    (broadcasts over heads), rows in (t, h, w) raster order.

    An interleaved pair (x_2i, x_2i+1) rotated by angle a is the complex product
    (x_2i + i x_2i+1)(cos a + i sin a): one fused multiply instead of stack/neg/mul/add.
    """
    return _cached_freqs(tuple(grid), tuple(dims), float(theta), str(device))


@lru_cache(maxsize=16)
def _cached_freqs(grid, dims, theta, device):
    axes = [torch.arange(n, dtype=torch.float32) for n in grid]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))
    angles = []
    for axis, dim in enumerate(dims):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
        angles.append(torch.outer(positions[:, axis].double(), freqs).float())
    angles = torch.cat(angles, dim=1)
    return torch.complex(angles.cos(), angles.sin()).to(device)[:, None, :]


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def rotate_into(out: torch.Tensor, x: torch.Tensor, freqs: torch.Tensor) -> None:
    """out[...] = rope(x), computed in float32 (as the reference) and cast to out's dtype."""
    if x.dtype == torch.float32 and out.dtype == torch.float32:
        torch.mul(_as_complex(x), freqs, out=_as_complex(out))
    else:
        out.copy_(torch.view_as_real(_as_complex(x.float()) * freqs).flatten(-2))


def rope_joint(img: torch.Tensor, txt: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[rope(img) ; txt] along tokens, [B, N+L, heads, head_dim], written without a concat."""
    n = img.shape[1]
    out = img.new_empty(img.shape[0], n + txt.shape[1], *img.shape[2:])
    rotate_into(out[:, :n], img, freqs)
    out[:, n:] = txt
    return out
