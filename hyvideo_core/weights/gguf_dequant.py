"""GGML block formats dequantised with torch ops (any device), bit-equal to `gguf.quants.dequantize`.

Every kernel maps raw blocks [n, type_size] (uint8) to float32 values [n, block_size]. The float
operations are done in the same order as the gguf package (e.g. (d * q) + m, d*sc*q - dmin*m as
two products and a difference) and as separate torch ops, so results match bit for bit.
Block layouts (QK_K = 256 for the K-quants) are those of ggml-quants.h (SPEC 9.3).
"""
from __future__ import annotations

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from ..errors import CheckpointError

QK_K = 256


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """[n, 2] bytes -> [n, 1] float32 (a little-endian fp16 per row)."""
    return raw.contiguous().view(torch.float16).float()


def _shifted(raw: torch.Tensor, groups: int, width: int, shifts: tuple[int, ...]) -> torch.Tensor:
    """raw [n, groups*width] -> [n, groups, len(shifts), width]: each byte shifted right by each shift."""
    s = torch.tensor(shifts, dtype=torch.uint8, device=raw.device).reshape(1, 1, -1, 1)
    return raw.reshape(raw.shape[0], groups, 1, width) >> s


def _bits(raw: torch.Tensor) -> torch.Tensor:
    """[n, k] bytes -> [n, 8k] single bits, little-endian bit order (bit j of the k-byte word)."""
    s = torch.arange(8, dtype=torch.uint8, device=raw.device)
    return ((raw.unsqueeze(-1) >> s) & 1).reshape(raw.shape[0], -1)


def _nibbles(raw: torch.Tensor) -> torch.Tensor:
    """[n, 16] -> [n, 32]: low nibbles are elements 0-15, high nibbles 16-31."""
    return (_shifted(raw, 1, raw.shape[1], (0, 4)) & 0x0F).reshape(raw.shape[0], -1)


def q8_0(b):
    return b[:, 2:].contiguous().view(torch.int8).float() * _f16(b[:, :2])


def q4_0(b):
    q = _nibbles(b[:, 2:]).to(torch.int8) - 8
    return _f16(b[:, :2]) * q.float()


def q4_1(b):
    q = _nibbles(b[:, 4:]).float()
    return (_f16(b[:, :2]) * q) + _f16(b[:, 2:4])


def _five_bit(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    return _nibbles(qs) | (_bits(qh) << 4)


def q5_0(b):
    q = _five_bit(b[:, 2:6], b[:, 6:]).to(torch.int8) - 16
    return _f16(b[:, :2]) * q.float()


def q5_1(b):
    q = _five_bit(b[:, 4:8], b[:, 8:]).float()
    return (_f16(b[:, :2]) * q) + _f16(b[:, 2:4])


def q2_k(b):
    n = b.shape[0]
    scales, qs = b[:, :16], b[:, 16:80]
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = (d * (scales & 0x0F).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    q = (_shifted(qs, 2, 32, (0, 2, 4, 6)) & 3).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def q3_k(b):
    n = b.shape[0]
    hmask, qs, scales, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    low = _shifted(scales[:, :8], 1, 8, (0, 4)).reshape(n, 16)
    high = _shifted(scales[:, 8:], 1, 4, (0, 2, 4, 6)).reshape(n, 16)
    sc = (((low & 0x0F) | ((high & 0x03) << 4)).to(torch.int8) - 32).float()
    dl = (d * sc).reshape(n, 16, 1)
    ql = (_shifted(qs, 2, 32, (0, 2, 4, 6)) & 3).reshape(n, 16, 16)
    qh = (_shifted(hmask, 1, 32, tuple(range(8))) & 1).reshape(n, 16, 16) ^ 1  # bit set = no offset
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).reshape(n, QK_K)


def _k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit (scale, min) pairs packed in 12 bytes (Q4_K, Q5_K)."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _k_affine(b, q):
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b[:, :2]) * sc.float()).reshape(n, 8, 1)
    dm = (_f16(b[:, 2:4]) * mn.float()).reshape(n, 8, 1)
    return (d * q - dm).reshape(n, QK_K)


def q4_k(b):
    q = (_shifted(b[:, 16:], 4, 32, (0, 4)) & 0x0F).reshape(b.shape[0], 8, 32).float()
    return _k_affine(b, q)


def q5_k(b):
    n = b.shape[0]
    ql = (_shifted(b[:, 48:], 4, 32, (0, 4)) & 0x0F).reshape(n, 8, 32)
    qh = (_shifted(b[:, 16:48], 1, 32, tuple(range(8))) & 1).reshape(n, 8, 32)
    return _k_affine(b, (ql | (qh << 4)).float())


def q6_k(b):
    n = b.shape[0]
    scales = b[:, 192:208].contiguous().view(torch.int8).float()
    d = (_f16(b[:, 208:210]) * scales).reshape(n, 16, 1)
    ql = (_shifted(b[:, :128], 2, 64, (0, 4)) & 0x0F).reshape(n, 8, 32)
    qh = (_shifted(b[:, 128:192], 2, 32, (0, 2, 4, 6)) & 3).reshape(n, 8, 32)
    q = ((ql | (qh << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    return (d * q).reshape(n, QK_K)


def bf16(b):
    return b.contiguous().view(torch.bfloat16).float()


def f16(b):
    return b.contiguous().view(torch.float16).float()


def f32(b):
    return b.contiguous().view(torch.float32)


KERNELS = {
    Q.F32: f32, Q.F16: f16, Q.BF16: bf16, Q.Q8_0: q8_0, Q.Q4_0: q4_0, Q.Q4_1: q4_1,
    Q.Q5_0: q5_0, Q.Q5_1: q5_1, Q.Q2_K: q2_k, Q.Q3_K: q3_k, Q.Q4_K: q4_k, Q.Q5_K: q5_k, Q.Q6_K: q6_k,
}
SUPPORTED = tuple(KERNELS)


def check_supported(qtype: Q, where: str) -> None:
    if qtype not in KERNELS:
        raise CheckpointError(
            f"{where}: GGUF quant type {qtype.name} is not supported. Supported: "
            f"{', '.join(t.name for t in SUPPORTED)}. Use a file quantised to one of these "
            "(e.g. Q8_0, Q5_K_M or Q4_K_M).")


def stored_bytes(qtype: Q, shape) -> int:
    block, type_size = GGML_QUANT_SIZES[qtype]
    numel = 1
    for s in shape:
        numel *= int(s)
    return numel // block * type_size


def dequantize(raw: torch.Tensor, qtype: Q, shape) -> torch.Tensor:
    """float32 tensor of logical `shape` from the raw bytes of a GGUF tensor (on raw's device)."""
    check_supported(qtype, "dequantize")
    block, type_size = GGML_QUANT_SIZES[qtype]
    blocks = raw.reshape(-1, type_size)
    return KERNELS[qtype](blocks).reshape(shape)
