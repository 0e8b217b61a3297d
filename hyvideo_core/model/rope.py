"""3D rotary position embedding for image tokens (SPEC 1.4).

Positions are integer (t, h, w) indices on the patch grid; each axis a with d_a channels uses
frequencies theta^(-2j/d_a). Pairs are interleaved: pair i is channels (2i, 2i+1), rotated by the
i-th angle (the reference's cos/sin tables repeat every angle twice). Text tokens get no rotation.

RIFLEx (SPEC_NEXT 3, `riflex_index` k >= 1): the k-th (1-based) temporal frequency becomes
0.9*2*pi/T for T latent frames, but only when T exceeds that frequency's period N_k =
round(2*pi/theta_k) (HunyuanVideo: k = 4, N_k = 50). It is a run option the model reads from
`model.rope_options` (a `RopeOptions`, set from outside for a run), never a flag in the blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..errors import InvalidInputError

RIFLEX_FACTOR = 0.9      # keeps the extrapolated length below 90 % of one period


@dataclass(frozen=True)
class RopeOptions:
    """Frequency options of the image RoPE; the default changes nothing."""

    riflex_index: int = 0          # 0 = off; 1-based index of the temporal frequency RIFLEx replaces


def axis_frequencies(dim: int, theta: float = 256.0) -> torch.Tensor:
    """One axis's intrinsic frequencies theta^(-2j/dim), j = 0 .. dim/2-1 (float64)."""
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)


def riflex_period(index: int, dim: int, theta: float = 256.0) -> int:
    """N_k = round(2*pi / theta_k) of the 1-based temporal frequency `index`, in latent frames."""
    if check_riflex_index(index, dim) == 0:
        raise InvalidInputError("riflex_index: 0 means off and has no period; give 1 or more.")
    return round(2 * math.pi / float(axis_frequencies(dim, theta)[index - 1]))


def riflex_applies(index: int, frames: int, dim: int, theta: float = 256.0) -> bool:
    """True when RIFLEx changes a frequency: index > 0 and more latent frames than N_k."""
    return index > 0 and frames > riflex_period(index, dim, theta)


def check_riflex_index(index, dim: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= dim // 2:
        raise InvalidInputError(
            f"riflex_index: must be an integer in [0, {dim // 2}] (0 = off, 4 for HunyuanVideo; this model's temporal "
            f"RoPE has {dim // 2} frequencies), got {index!r}.")
    return index


def rope_freqs(grid: tuple[int, int, int], dims: tuple[int, ...], theta: float = 256.0,
               device: torch.device | str = "cpu", riflex_index: int = 0) -> torch.Tensor:
    """The rotation of every image token as complex numbers, [T*H*W, 1, sum(dims)/2] complex64
    (broadcasts over heads), rows in (t, h, w) raster order.

    An interleaved pair (x_2i, x_2i+1) rotated by angle a is the complex product
    (x_2i + i x_2i+1)(cos a + i sin a): one fused multiply instead of stack/neg/mul/add.
    `riflex_index` > 0: RIFLEx on the temporal axis (axis 0) when T > N_k (see the module doc).
    """
    check_riflex_index(riflex_index, dims[0])
    if riflex_index and not riflex_applies(riflex_index, grid[0], dims[0], theta):
        riflex_index = 0                     # below N_k: the plain table (and its cache entry)
    return _cached_freqs(tuple(grid), tuple(dims), float(theta), str(device), int(riflex_index))


@lru_cache(maxsize=16)
def _cached_freqs(grid, dims, theta, device, riflex_index=0):
    axes = [torch.arange(n, dtype=torch.float32) for n in grid]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))
    angles = []
    for axis, dim in enumerate(dims):
        freqs = axis_frequencies(dim, theta)
        if axis == 0 and riflex_index:
            freqs = freqs.clone()
            freqs[riflex_index - 1] = RIFLEX_FACTOR * 2 * math.pi / grid[0]
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
