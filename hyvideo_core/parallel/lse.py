"""Attention over one chunk of keys with its log-sum-exp, and the online-softmax merge.

Ring attention computes softmax(q k^T) v over all keys as a sum over key chunks: each chunk
gives (o_j, lse_j) with o_j = softmax over the chunk's keys and lse_j = log sum exp of its
scores; two partial results merge exactly as

    lse = logaddexp(lse_a, lse_b),   o = o_a * exp(lse_a - lse) + o_b * exp(lse_b - lse).

The public torch SDPA does not return the log-sum-exp, so a chunk runs through the SDPA kernel
that does on its device (the same kernels torch's own context parallelism calls):
- CPU: aten._scaled_dot_product_flash_attention_for_cpu;
- CUDA, fp16/bf16: aten._scaled_dot_product_flash_attention;
- CUDA, fp32 (or where flash refuses the shape): aten._scaled_dot_product_efficient_attention;
- anything else: plain math in query chunks (float32).
Each kernel is checked once per (device type, dtype) against the math on a small probe of the
real inputs; a kernel that is missing or disagrees is replaced by the math (logged once).

Chunks are never empty (callers skip chunks that are all padding): a zero-length key set makes
the CPU kernel crash, and it contributes nothing.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

_HALF = (torch.float16, torch.bfloat16)
_MATH_BYTES = 256 << 20       # score-matrix budget per query chunk of the math path
_chosen: dict[tuple[str, torch.dtype], object] = {}


def _math(q, k, v):
    """q [B,H,Lq,D], k/v [B,H,Lk,D] -> (out in q.dtype, lse float32 [B,H,Lq])."""
    scale = q.shape[-1] ** -0.5
    kf, vf = k.float(), v.float()
    rows = max(1, _MATH_BYTES // max(1, 4 * q.shape[0] * q.shape[1] * k.shape[2]))
    outs, lses = [], []
    for start in range(0, q.shape[2], rows):
        s = torch.matmul(q[:, :, start:start + rows].float(), kf.transpose(-1, -2)) * scale
        lse = torch.logsumexp(s, dim=-1)
        outs.append(torch.matmul(torch.exp(s - lse[..., None]), vf))
        lses.append(lse)
    return torch.cat(outs, dim=2).to(q.dtype), torch.cat(lses, dim=2)


def _cpu(q, k, v):
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)
    return out, lse.float()


def _cuda_flash(q, k, v):
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False)[:2]
    return out, lse[..., : q.shape[2]].float()


def _cuda_efficient(q, k, v):
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
    return out, lse[..., : q.shape[2]].float()   # some versions pad the lse rows to a multiple of 32


def _candidate(device: torch.device, dtype: torch.dtype, head_dim: int):
    if device.type == "cpu":
        return _cpu
    if device.type == "cuda":
        return _cuda_flash if dtype in _HALF and head_dim <= 256 else _cuda_efficient
    return _math


def _probe_agrees(kernel, q, k, v) -> bool:
    q, k, v = q[:1, :1, :8], k[:1, :1, :512], v[:1, :1, :512]
    try:
        out, lse = kernel(q, k, v)
    except (RuntimeError, NotImplementedError) as exc:
        log.warning("ring attention: %s is unusable here (%s); using the float32 math path.", kernel.__name__, exc)
        return False
    ref_out, ref_lse = _math(q, k, v)
    tol = 2e-2 if q.dtype in _HALF else 1e-4
    ok = (lse.shape == ref_lse.shape and bool(torch.allclose(lse, ref_lse, atol=tol * 10, rtol=tol))
          and bool(torch.allclose(out.float(), ref_out.float(), atol=tol, rtol=tol)))
    if not ok:
        log.warning("ring attention: %s disagrees with the reference softmax on %s/%s; using the float32 math "
                    "path.", kernel.__name__, q.device.type, q.dtype)
    return ok


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked attention of q [B,H,Lq,D] over k, v [B,H,Lk,D] (Lk >= 1): (out [B,H,Lq,D] in q's
    dtype, lse [B,H,Lq] float32)."""
    key = (q.device.type, q.dtype)
    kernel = _chosen.get(key)
    if kernel is None:
        candidate = _candidate(q.device, q.dtype, q.shape[-1])
        kernel = candidate if candidate is _math or _probe_agrees(candidate, q, k, v) else _math
        _chosen[key] = kernel
    return kernel(q, k, v)


class OnlineSoftmax:
    """Accumulates partial attention results (out, lse) over key chunks, in float32."""

    def __init__(self):
        self.out: torch.Tensor | None = None
        self.lse: torch.Tensor | None = None

    def add(self, out: torch.Tensor, lse: torch.Tensor) -> None:
        if self.out is None:
            self.out, self.lse = out.float(), lse
            return
        merged = torch.logaddexp(self.lse, lse)
        self.out = (self.out * torch.exp(self.lse - merged)[..., None]
                    + out.float() * torch.exp(lse - merged)[..., None])
        self.lse = merged

    def result(self, dtype: torch.dtype) -> torch.Tensor:
        return self.out.to(dtype)
