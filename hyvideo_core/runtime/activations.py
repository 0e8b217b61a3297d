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

Sequence parallelism (`Tokens.ulysses`, `Tokens.ring`; SPEC_NEXT 1.2): a rank's block runs on its
n = N/(U*R) image tokens (padded up) and the whole text, so every point above is counted with
N = n; only the attention call and the callers' state differ. Counted from the pack's own
algorithms (parallel/attention.py, comm.py, lse.py, policy.py as of this commit), with X = B*n*D
(this rank's image q, k or v), Y = B*T*D (the text's) and Q = B*(U*n + T)*D/U (the queries of
this rank's head shard of the whole sequence):
- kept through the call: the stacked image q/k/v (3X) and the stacked text q/k/v (3Y, sliced
  to this rank's heads as a view);
- Ulysses (U > 1) all-to-all in: send copy, receive buffer and the reordered result (3 x 3X);
  the output goes back the same way (send, receive, result: 3X, beside the Q-sized output);
- no ring: the gathered [image ; text] q/k/v concatenated (3Q) and the model's backend on them
  (queries and keys U*n + T, H/U heads);
- ring (R > 1): the [image ; text] queries (Q), the circulating K/V chunk and, while another
  follows, the one arriving (2 x 2X), one chunk's output (Q) and log-sum-exps, and the float32
  online-softmax merge (accumulator, two weighted terms and their sum: 4 x Q in float32). The
  chunk kernel is the SDPA kernel that returns the log-sum-exp (O(L)), whatever the backend;
- callers: the image embedding and the RoPE table of the whole sequence stay alive beside the
  shard (the shard is a view of them), so those are counted at U*R*n tokens.
U = R = 1 gives exactly the one-device counts (the policy then installs no parallel attention).
Measured on 2 gloo ranks (medium config, 1024 + 256 tokens per rank, float32, the RSS method of
tests/test_planner_activations.py): Ulysses 2 37.0 MiB vs 38.3 predicted, ring 2 39.8 vs 39.8.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import DiTConfig


@dataclass(frozen=True)
class Tokens:
    """The tokens one device's blocks run on: its batch, its image tokens (all N, or N/(U*R) under
    sequence parallelism), the whole text, and the degrees its attention exchanges over."""

    batch: int
    image: int     # N (this rank's share under sequence parallelism)
    text: int      # T
    ulysses: int = 1
    ring: int = 1

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
    """Bytes the attention call adds on top of this rank's q, k, v (output included)."""
    if tok.ulysses == 1 and tok.ring == 1:
        return kernel_transient(tok.batch, cfg.heads, tok.joint, tok.joint, cfg.head_dim, s, backend)
    return sequence_parallel_transient(cfg, tok, s, backend)


def kernel_transient(batch: int, heads: int, q_len: int, k_len: int, head_dim: int, s: int, backend: str) -> int:
    """One attention kernel call on [batch, heads] of q_len queries against k_len keys."""
    Zq, Zk = batch * q_len * heads * head_dim, batch * k_len * heads * head_dim
    lse = batch * heads * q_len * 4
    padded = batch > 1  # different prompt lengths in one batch leave text padding
    if backend == "sdpa":      # fused flash / memory-efficient kernels: O(L)
        return 2 * Zq * s + lse   # [B,H,L,d] output + its [B,L,H*d] copy
    if backend == "sdpa_math":  # the unfused path materialises scores and probabilities
        return 2 * Zq * s + 2 * batch * heads * q_len * k_len * s
    if backend in ("flash", "sage"):
        packing = (2 * Zq + 2 * Zk) * s if padded else 0   # packed q/k/v + scattered output
        quantised = Zq + Zk + Zk * s if backend == "sage" else 0  # int8 q/k + a v copy
        return Zq * s + lse + packing + quantised
    raise ValueError(f"unknown attention backend {backend!r}")


def sequence_parallel_transient(cfg: DiTConfig, tok: Tokens, s: int, backend: str) -> int:
    """The attention call of one rank under Ulysses x ring sequence parallelism (module docstring)."""
    B, U, R, n, T = tok.batch, tok.ulysses, tok.ring, tok.image, tok.text
    heads, d = cfg.heads // U, cfg.head_dim
    X, Y = B * n * cfg.hidden_size, B * T * cfg.hidden_size
    length = U * n + T                              # the head shard's sequence
    Q = B * length * heads * d
    kept = 3 * X * s + 3 * Y * s                    # stacked image q/k/v, stacked text q/k/v
    lse = B * heads * length * 4
    if R == 1:
        points = [kept + 3 * Q * s + kernel_transient(B, heads, length, length, d, s, backend)]
    else:  # queries, K/V chunk, one chunk's output; the first chunk starts the float32 accumulator while
        # the next chunk is in flight, later chunks merge (4 Q in float32) beside one in flight if any follows
        in_flight = 2 * X * s if R > 2 else 0
        points = [kept + Q * s + 2 * X * s + 2 * X * s + Q * s + lse + Q * 4,
                  kept + Q * s + 2 * X * s + in_flight + Q * s + 3 * lse + 4 * Q * 4]
    if U > 1:
        points.append(kept + 3 * 3 * X * s)         # all-to-all in: send, receive, reordered result
    points.append(kept + Q * s + (3 * X * s if U > 1 else X * s))   # the output back to this rank's tokens
    return max(points)


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
    [N, head_dim/2] form). Under sequence parallelism the whole embedding and RoPE table stay
    alive under this rank's shard (a view of them)."""
    Z = tok.batch * tok.joint * cfg.hidden_size
    whole = tok.image * tok.ulysses * tok.ring      # the sequence the shard views (all of it: N)
    rope = 3 * whole * cfg.head_dim * 4
    embedding = tok.batch * (whole - tok.image) * cfg.hidden_size * s   # beyond the shard
    return (3 if single else 2) * Z * s + rope + embedding


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
