"""Bytes of the live tensors while one DiT block runs, counted from the code, not guessed.

Each block type is walked through its forward (model/blocks.py, rope.py, ops.py as of this
commit) and the tensors alive at every candidate peak are summed; the block's peak is the largest
of these points. Notation: B batch, N image tokens, T text tokens, L = N + T, D hidden, M MLP
hidden, s compute dtype bytes; X = B*N*D, Z = B*L*D elements.

Float32 detours in two helpers matter:
- RMSNorm (q/k norm, ops.py) normalises in float32: 8 bytes/element at its peak (float copy or
  contiguous copy + normalised values), output included.
- RoPE (rope.rope_joint) writes into a preallocated [B, L, heads, head_dim] output; in bf16/fp16
  the image part goes through a float32 copy and a complex64 product (8 bytes/element), in
  float32 it multiplies in place (nothing extra).
`tests/test_planner_activations.py` checks these counts against measured CPU runs; if the blocks'
code changes, that test says so and this file must follow.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import DiTConfig


@dataclass(frozen=True)
class Tokens:
    batch: int
    image: int     # N
    text: int      # T

    @property
    def joint(self) -> int:
        return self.image + self.text


def rms_peak(elements: int, s: int) -> int:
    """RMSNorm of a compute-dtype tensor, output included."""
    return elements * 8


def rope_transient(image_elements: int, s: int) -> int:
    """Temporaries of rope_joint beyond its output (the float32 copy and complex product)."""
    return 0 if s == 4 else image_elements * 8


def attention_transient(cfg: DiTConfig, tok: Tokens, s: int, backend: str) -> int:
    """Bytes the attention call adds on top of q, k, v (output included)."""
    B, L, H, D = tok.batch, tok.joint, cfg.heads, cfg.hidden_size
    Z = B * L * D
    lse = B * H * L * 4
    padded = B > 1  # different prompt lengths in one batch leave text padding
    if backend == "sdpa":      # fused flash / memory-efficient kernels: O(L)
        return 2 * Z * s + lse   # [B,H,L,d] output + its [B,L,H*d] copy
    if backend == "sdpa_math":  # the unfused path materialises scores and probabilities
        return 2 * Z * s + 2 * B * H * L * L * s
    if backend in ("flash", "sage"):
        packing = 4 * Z * s if padded else 0   # packed q/k/v + scattered output
        quantised = 2 * Z + Z * s if backend == "sage" else 0  # int8 q/k + a v copy
        return Z * s + lse + packing + quantised
    raise ValueError(f"unknown attention backend {backend!r}")


def double_block_points(cfg: DiTConfig, tok: Tokens, s: int, backend: str, dq) -> dict[str, int]:
    """Live bytes at each candidate peak of DoubleBlock.forward (excluding weights and inputs).

    dq(name) = dequantisation workspace of that Linear (0 for plain weights)."""
    B, D, M = tok.batch, cfg.hidden_size, cfg.mlp_hidden
    X, Y = B * tok.image * D, B * tok.text * D
    Z = X + Y
    img_qkv = 3 * X * s + 2 * X * s       # fused qkv output + normed q and k (locals to the end)
    txt_qkv = 3 * Y * s + 2 * Y * s
    return {
        "double: img qkv linear": X * s + 3 * X * s + dq("qkv"),
        "double: img k-norm": 4 * X * s + rms_peak(X, s),
        "double: rope q": img_qkv + txt_qkv + Z * s + rope_transient(X, s),
        "double: rope k": img_qkv + txt_qkv + 2 * Z * s + rope_transient(X, s),
        "double: attention": img_qkv + txt_qkv + 3 * Z * s + attention_transient(cfg, tok, s, backend),
        "double: img mlp fc1": img_qkv + txt_qkv + 4 * Z * s + 2 * X * s + B * tok.image * M * s + dq("fc1"),
        "double: img mlp act": img_qkv + txt_qkv + 4 * Z * s + 2 * X * s + 2 * B * tok.image * M * s,
        "double: img mlp fc2": img_qkv + txt_qkv + 4 * Z * s + 3 * X * s + B * tok.image * M * s + dq("fc2"),
    }


def single_block_points(cfg: DiTConfig, tok: Tokens, s: int, backend: str, dq) -> dict[str, int]:
    B, D, M = tok.batch, cfg.hidden_size, cfg.mlp_hidden
    X, Z = B * tok.image * D, B * tok.joint * D
    lin1 = Z * (3 * D + M) // D * s      # linear1 output: q, k, v and the MLP input
    cat = Z * (D + M) // D * s           # [attention ; act(mlp)] input of linear2
    return {
        "single: linear1": Z * s + lin1 + dq("linear1"),
        "single: k-norm": lin1 + Z * s + rms_peak(Z, s),
        "single: rope": lin1 + 3 * Z * s + rope_transient(X, s),   # q/k normed, one rotated, one output
        "single: attention": lin1 + 2 * Z * s + attention_transient(cfg, tok, s, backend),
        "single: concat": lin1 + 3 * Z * s + B * tok.joint * M * s + cat,
        "single: linear2": lin1 + 3 * Z * s + cat + Z * s + dq("linear2"),
    }


def stream_state(cfg: DiTConfig, tok: Tokens, s: int, single: bool) -> int:
    """Hidden states held by the callers while a block runs: the embedded tokens (kept by the
    forward), the current block's input (double) or the joint x plus the img/txt it came from
    (single), and the RoPE tables (cached float32 cos and sin [N, head_dim] and their complex64
    [N, head_dim/2] form)."""
    Z = tok.batch * tok.joint * cfg.hidden_size
    rope = 3 * tok.image * cfg.head_dim * 4
    return (3 if single else 2) * Z * s + rope


def block_peak(cfg: DiTConfig, tok: Tokens, dtype: torch.dtype, backend: str, dq=lambda name: 0):
    """(bytes, label) of the largest activation point over both block types."""
    s = dtype.itemsize
    candidates = {}
    for single, points in ((False, double_block_points(cfg, tok, s, backend, dq)),
                           (True, single_block_points(cfg, tok, s, backend, dq))):
        base = stream_state(cfg, tok, s, single)
        candidates.update({label: base + value for label, value in points.items()})
    label = max(candidates, key=candidates.get)
    return candidates[label], label


def dequant_workspace(numel: int, kind: str) -> int:
    """Temporaries while a stored weight becomes a compute tensor (codec.decode):
    fp8: float32 copy and product; GGUF: unpacked quants, products (and offsets) in float32."""
    factor = {"fp8": 8, "gguf_scale": 8, "gguf_affine": 12, "cast": 2, "none": 0}[kind]
    return numel * factor
