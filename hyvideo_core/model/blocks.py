"""The DiT's blocks: token refiner, double-stream, single-stream and final layer (SPEC 1.2).

Key names follow the official checkpoint, so the official state dict loads without renames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import TokenLayout
from .layers import (Leading, Modulation, TimestepEmbedder, feed_forward, gated_add, gelu_tanh, modulate,
                     text_projection)
from .rope import rope_joint


@dataclass(frozen=True)
class FirstTokens:
    """The leading image tokens of this forward's sequence that have their own conditioning
    vector (token_replace: latent frame 0; on a sequence-parallel rank, the part it holds)."""

    vec: torch.Tensor            # [B, hidden]
    count: int                   # >= 1 leading image tokens of this (local) sequence


@dataclass
class BlockContext:
    """What every block of one forward shares."""

    vec: torch.Tensor            # [B, hidden] conditioning vector
    rope: torch.Tensor           # complex rotation [N_img, 1, head_dim/2] (rope.rope_freqs)
    layout: TokenLayout          # which joint tokens are real
    attention: object            # backend: (q, k, v, layout) -> [B, L, hidden]
    first_tokens: FirstTokens | None = None   # None: every token uses `vec`

    @property
    def image_vec(self) -> "torch.Tensor | Leading":
        """The conditioning of the image stream (in single blocks: of the joint sequence, which
        starts with the image tokens); text tokens and the final layer always use `vec`."""
        if self.first_tokens is None:
            return self.vec
        return Leading(self.first_tokens.vec, self.vec, self.first_tokens.count)


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, L, 3*H*D] laid out (3, H, D) -> q, k, v each [B, L, H, D]."""
    return qkv.unflatten(-1, (3, heads, -1)).unbind(2)


class RefinerBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float, ops, **kw):
        super().__init__()
        self.heads = heads
        self.norm1 = ops.LayerNorm(hidden, eps=1e-6, **kw)
        self.self_attn_qkv = ops.Linear(hidden, 3 * hidden, **kw)
        self.self_attn_proj = ops.Linear(hidden, hidden, **kw)
        self.norm2 = ops.LayerNorm(hidden, eps=1e-6, **kw)
        self.mlp = feed_forward(hidden, int(hidden * mlp_ratio), nn.SiLU(), ops, **kw)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(hidden, 2 * hidden, **kw))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        gate_attn, gate_mlp = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
        q, k, v = (t.transpose(1, 2) for t in split_heads(self.self_attn_qkv(self.norm1(x)), self.heads))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)
        x = gated_add(x, gate_attn, self.self_attn_proj(attn))
        return gated_add(x, gate_mlp, self.mlp(self.norm2(x)))


class TokenRefiner(nn.Module):
    """txt_in: projects LLM states to the hidden size and refines them, conditioned on t."""

    def __init__(self, text_dim: int, hidden: int, heads: int, depth: int, freq_dim: int, ops, **kw):
        super().__init__()
        self.input_embedder = ops.Linear(text_dim, hidden, **kw)
        self.t_embedder = TimestepEmbedder(hidden, freq_dim, ops, **kw)
        self.c_embedder = text_projection(text_dim, hidden, ops, **kw)
        self.individual_token_refiner = nn.Module()
        self.individual_token_refiner.blocks = nn.ModuleList(
            RefinerBlock(hidden, heads, 4.0, ops, **kw) for _ in range(depth))

    def forward(self, text: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            pooled = text.mean(dim=1)
            attn_mask = None
        else:
            m = mask.to(text.dtype).unsqueeze(-1)
            pooled = (text * m).sum(dim=1) / m.sum(dim=1)
            # Valid query rows see valid keys; key 0 is always visible (the reference's rule).
            attn_mask = mask.bool()[:, None, None, :].clone()
            attn_mask[..., 0] = True
        c = self.t_embedder(t, text.dtype) + self.c_embedder(pooled)
        x = self.input_embedder(text)
        for block in self.individual_token_refiner.blocks:
            x = block(x, c, attn_mask)
        return x


class DoubleBlock(nn.Module):
    """Separate weights for image and text tokens, joint attention over [img ; txt]."""

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, qkv_bias: bool, ops, **kw):
        super().__init__()
        self.heads = heads
        head_dim = hidden // heads
        for s in ("img", "txt"):
            self.add_module(f"{s}_mod", Modulation(hidden, 6, ops, **kw))
            self.add_module(f"{s}_attn_qkv", ops.Linear(hidden, 3 * hidden, bias=qkv_bias, **kw))
            self.add_module(f"{s}_attn_q_norm", ops.RMSNorm(head_dim, eps=1e-6, **kw))
            self.add_module(f"{s}_attn_k_norm", ops.RMSNorm(head_dim, eps=1e-6, **kw))
            self.add_module(f"{s}_attn_proj", ops.Linear(hidden, hidden, **kw))
            self.add_module(f"{s}_mlp", feed_forward(hidden, mlp_hidden, gelu_tanh(), ops, **kw))

    def modulated_image_input(self, img: torch.Tensor, vec: "torch.Tensor | Leading") -> torch.Tensor:
        """LN(img)*(1+scale1)+shift1: the TeaCache indicator (SPEC 6)."""
        shift, scale = self.img_mod(vec)[:2]
        return modulate(img, shift, scale)

    def _qkv(self, s: str, x: torch.Tensor, shift, scale):
        q, k, v = split_heads(getattr(self, f"{s}_attn_qkv")(modulate(x, shift, scale)), self.heads)
        return getattr(self, f"{s}_attn_q_norm")(q), getattr(self, f"{s}_attn_k_norm")(k), v

    def forward(self, img: torch.Tensor, txt: torch.Tensor, ctx: BlockContext):
        i_sh1, i_sc1, i_g1, i_sh2, i_sc2, i_g2 = self.img_mod(ctx.image_vec)
        t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2 = self.txt_mod(ctx.vec)
        iq, ik, iv = self._qkv("img", img, i_sh1, i_sc1)
        tq, tk, tv = self._qkv("txt", txt, t_sh1, t_sc1)
        q = rope_joint(iq, tq, ctx.rope)
        k = rope_joint(ik, tk, ctx.rope)
        v = torch.cat([iv, tv], dim=1)
        attn = ctx.attention(q, k, v, ctx.layout)
        n_img = img.shape[1]
        img = gated_add(img, i_g1, self.img_attn_proj(attn[:, :n_img]))
        img = gated_add(img, i_g2, self.img_mlp(modulate(img, i_sh2, i_sc2)))
        txt = gated_add(txt, t_g1, self.txt_attn_proj(attn[:, n_img:]))
        txt = gated_add(txt, t_g2, self.txt_mlp(modulate(txt, t_sh2, t_sc2)))
        return img, txt


class SingleBlock(nn.Module):
    """One weight set for the joint sequence; attention and MLP run in parallel (linear1/2)."""

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, qkv_bias: bool, ops, **kw):
        super().__init__()
        self.heads = heads
        self.hidden = hidden
        self.mlp_hidden = mlp_hidden
        head_dim = hidden // heads
        self.linear1 = ops.Linear(hidden, 3 * hidden + mlp_hidden, bias=qkv_bias, **kw)
        self.linear2 = ops.Linear(hidden + mlp_hidden, hidden, **kw)
        self.q_norm = ops.RMSNorm(head_dim, eps=1e-6, **kw)
        self.k_norm = ops.RMSNorm(head_dim, eps=1e-6, **kw)
        self.modulation = Modulation(hidden, 3, ops, **kw)
        self.mlp_act = gelu_tanh()

    def forward(self, x: torch.Tensor, n_img: int, ctx: BlockContext) -> torch.Tensor:
        shift, scale, gate = self.modulation(ctx.image_vec)
        qkv, mlp = self.linear1(modulate(x, shift, scale)).split([3 * self.hidden, self.mlp_hidden], dim=-1)
        q, k, v = split_heads(qkv, self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        q = rope_joint(q[:, :n_img], q[:, n_img:], ctx.rope)
        k = rope_joint(k[:, :n_img], k[:, n_img:], ctx.rope)
        attn = ctx.attention(q, k, v, ctx.layout)
        return gated_add(x, gate, self.linear2(torch.cat([attn, self.mlp_act(mlp)], dim=-1)))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_features: int, ops, **kw):
        super().__init__()
        self.linear = ops.Linear(hidden, out_features, **kw)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(hidden, 2 * hidden, **kw))

    def forward(self, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(modulate(img, shift, scale))
