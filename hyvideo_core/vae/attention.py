"""The mid block: resnet, single-head frame-causal self-attention, resnet.

Tokens are flattened frame-major (f, h, w); a token attends to every token of its own and of
earlier frames. Beyond a small size, rather than building the [L, L] mask, the queries of frame
f attend to the key prefix that ends with frame f (the same softmax, restricted to the allowed
keys), in query chunks small enough that the score matrix stays bounded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ResnetBlockCausal3D

# Upper bound of one [queries, keys] score block, in elements.
SCORE_BLOCK_ELEMENTS = 32 << 20
# Up to this many score elements the whole masked attention runs in one call.
SMALL_MASKED_ELEMENTS = 1 << 20


class FrameCausalAttention(nn.Module):
    """GroupNorm, to_q / to_k / to_v, attention, to_out.0, residual (diffusers Attention names)."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # [B, T*H*W, C]
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        del tokens
        attended = frame_causal_attention(q, k, v, frame_tokens=h * w)
        del q, k, v
        out = self.to_out[0](attended)
        del attended
        out = out.transpose(1, 2).reshape(b, c, t, h, w)
        return out.add_(x)


def frame_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           frame_tokens: int) -> torch.Tensor:
    """Single-head attention on [B, L, C] where query i sees keys of frames <= frame(i)."""
    length = q.shape[1]
    if length * length * q.shape[0] <= SMALL_MASKED_ELEMENTS:
        # Small: one call with the additive 0/-inf mask, as the reference does (same rounding).
        frame = torch.arange(length, device=q.device) // frame_tokens
        mask = torch.zeros((length, length), dtype=q.dtype, device=q.device)
        mask.masked_fill_(frame[None, :] > frame[:, None], float("-inf"))
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=mask)[:, 0]
    out = torch.empty_like(q)
    for frame_start in range(0, length, frame_tokens):
        keys_end = frame_start + frame_tokens
        rows = max(1, SCORE_BLOCK_ELEMENTS // (keys_end * q.shape[0]))
        for start in range(frame_start, keys_end, rows):
            stop = min(start + rows, keys_end)
            out[:, start:stop] = F.scaled_dot_product_attention(
                q[:, None, start:stop], k[:, None, :keys_end], v[:, None, :keys_end])[:, 0]
    return out


class MidBlockCausal3D(nn.Module):
    def __init__(self, channels: int, groups: int, attention: bool = True, eps: float = 1e-6):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlockCausal3D(channels, channels, groups, eps),
                                      ResnetBlockCausal3D(channels, channels, groups, eps)])
        self.attentions = nn.ModuleList([FrameCausalAttention(channels, groups, eps)] if attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x)
