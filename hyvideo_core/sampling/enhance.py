"""Enhance-A-Video (FETA, SPEC_NEXT 6.2): a cross-frame attention intensity that scales the image
part of every joint attention output, as an attention-backend wrapper (the blocks stay unaware).

For image q, k after RoPE, [B, T*S, heads, d] in the model's (t, h, w) raster order, tokens are
regrouped per spatial position into T x T attention matrices A = softmax(q k^T / sqrt(d)) over
the frames (float32). The cross-frame intensity is the mean of A's T^2 - T off-diagonal entries,
averaged over positions and heads; the score is clamp_min(CFI * (T + weight), 1).

Choices here:
- the score is computed per sample (the official code averages over the whole batch, which is
  the same for its batch of 1); so batched true CFG, sequential CFG and CFG parallel agree;
- it multiplies the image rows of the attention backend's output in every double and single
  block: in single blocks that is the official place (the image part before linear2); in double
  blocks it is before img_attn_proj (KJ's place; the official code scales after the projection,
  which differs by the projection bias being scaled too);
- one latent frame has no cross-frame attention: the score is 1 there.
"""
from __future__ import annotations

import torch

from ..errors import InvalidInputError

CHUNK_BYTES = 1 << 28     # float32 T x T matrices computed at a time (positions chunked)


def enhance_score(q_img: torch.Tensor, k_img: torch.Tensor, frames: int, weight: float) -> torch.Tensor:
    """The FETA score per sample, [B] float32, from image q, k [B, T*S, heads, d]."""
    batch, tokens, heads, dim = q_img.shape
    if frames < 1 or tokens % frames:
        raise InvalidInputError(
            f"enhance_weight: {tokens} image tokens do not split into {frames} latent frames.")
    if frames == 1:
        return torch.ones(batch, dtype=torch.float32, device=q_img.device)
    space = tokens // frames
    # [B, T, S, H, d] -> [B, S, H, T, d]: one T x T matrix per sample, position and head
    q = q_img.reshape(batch, frames, space, heads, dim).permute(0, 2, 3, 1, 4)
    k = k_img.reshape(batch, frames, space, heads, dim).permute(0, 2, 3, 1, 4)
    step = max(1, CHUNK_BYTES // (batch * heads * frames * frames * 4))
    off = torch.zeros(batch, dtype=torch.float32, device=q_img.device)
    for start in range(0, space, step):
        qs, ks = q[:, start:start + step].float(), k[:, start:start + step].float()
        a = torch.softmax(qs @ ks.transpose(-1, -2) * dim ** -0.5, dim=-1)
        off += (a.sum((-2, -1)) - a.diagonal(dim1=-2, dim2=-1).sum(-1)).sum((1, 2))
    cfi = off / (space * heads * (frames * frames - frames))
    return (cfi * (frames + float(weight))).clamp_min(1.0)


class EnhanceAttention:
    """Backend `(q, k, v, layout) -> [B, L, hidden]`: `inner`'s output with its image rows
    multiplied by the per-sample FETA score. `grid` (latent T, H, W on the patch grid) gives the
    frames and the image-token count; `set_grid` updates it before each forward."""

    def __init__(self, inner, weight: float, grid: tuple[int, int, int]):
        self.inner = inner
        self.weight = float(weight)
        self.name = f"{getattr(inner, 'name', 'attention')}+enhance"
        self.set_grid(grid)

    def set_grid(self, grid: tuple[int, int, int]) -> None:
        self.frames = int(grid[0])
        self.image_tokens = int(grid[0]) * int(grid[1]) * int(grid[2])

    def __call__(self, q, k, v, layout) -> torch.Tensor:
        n = self.image_tokens
        if q.shape[1] < n:
            raise InvalidInputError(
                f"enhance_weight: the attention sees {q.shape[1]} tokens, fewer than the {n} image tokens "
                "(a split sequence); Enhance-A-Video needs the whole sequence in one process.")
        out = self.inner(q, k, v, layout)
        score = enhance_score(q[:, :n], k[:, :n], self.frames, self.weight)
        out[:, :n] *= score.to(out.dtype)[:, None, None]
        return out
