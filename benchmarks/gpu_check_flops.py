"""The analytic FLOP count of a DiT forward (SPEC 10.1) and the GPU's measured GEMM rate.

SPEC 10.1, per forward with L = N_img + text tokens (256 at the official settings):
- linear layers: 12 D^2 multiply-adds per token per block for both block types (double: qkv 3D^2
  + proj D^2 + MLP 8D^2; single: linear1 7D^2 + linear2 5D^2), i.e. 24 D^2 L FLOPs per block;
- attention: QK^T and PV, 4 L^2 D FLOPs per block;
- embedders, refiner and modulation (~0.2 TFLOP at 13B) are left out, as in the SPEC's table.
The block figures hold for an MLP ratio of 4 (the 13B's); other configs scale the MLP term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gpu_check_common import median, timed


@dataclass(frozen=True)
class FlopCount:
    tokens: int          # L = image tokens + text tokens
    linear: float        # FLOPs of every block's linear layers
    attention: float     # FLOPs of every block's attention
    per_double: float
    per_single: float

    @property
    def total(self) -> float:
        return self.linear + self.attention


def image_tokens(config, latent_thw: tuple[int, int, int]) -> int:
    pt, ph, pw = config.patch_size
    t, h, w = latent_thw
    return (t // pt) * (h // ph) * (w // pw)


def block_flops(config, tokens: int) -> tuple[float, float]:
    """(linear, attention) FLOPs of one block (double and single count the same, SPEC 10.1)."""
    d = config.hidden_size
    # 2 FLOPs per multiply-add; 4 D^2 for qkv + proj, 2 D M for the MLP (M = mlp_ratio D)
    linear = 2.0 * tokens * (4 * d * d + 2 * d * config.mlp_hidden)
    attention = 4.0 * tokens * tokens * d
    return linear, attention


def forward_flops(config, latent_thw: tuple[int, int, int], text_tokens: int = 256) -> FlopCount:
    tokens = image_tokens(config, latent_thw) + text_tokens
    linear, attention = block_flops(config, tokens)
    blocks = config.double_blocks + config.single_blocks
    return FlopCount(tokens, blocks * linear, blocks * attention, linear + attention, linear + attention)


@dataclass(frozen=True)
class GemmRate:
    dtype: str
    size: int
    seconds: float
    flops_per_s: float


def gemm_rate(device: torch.device, size: int, dtype=torch.bfloat16, repeats: int = 10) -> GemmRate:
    """FLOP/s of a square size^3 matmul in `dtype`: the reference the achieved rates are divided by."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = median(timed(lambda: a @ b, device, warmup=2, repeats=repeats))
    return GemmRate(str(dtype).replace("torch.", ""), size, seconds, 2.0 * size**3 / seconds)


def fp8_gemm_rate(device: torch.device, size: int, repeats: int = 10) -> GemmRate | str:
    """FLOP/s of torch._scaled_mm (e4m3fn x e4m3fn -> bf16), or why it cannot run here."""
    if device.type != "cuda":
        return "not measured: _scaled_mm needs CUDA"
    if torch.cuda.get_device_capability(device) < (8, 9):
        return f"not measured: compute capability {torch.cuda.get_device_capability(device)} < (8, 9)"
    a = torch.randn(size, size, device=device).to(torch.float8_e4m3fn)
    b = torch.randn(size, size, device=device).to(torch.float8_e4m3fn).t()  # column-major operand
    one = torch.ones((), device=device)
    run = lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)  # noqa: E731
    seconds = median(timed(run, device, warmup=2, repeats=repeats))
    return GemmRate("float8_e4m3fn", size, seconds, 2.0 * size**3 / seconds)
