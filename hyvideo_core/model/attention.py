"""Attention backends for the joint image+text attention of the DiT blocks.

The reference attends [image ; valid text] per sample and lets the text padding attend only
among itself (flash-attn varlen, SPEC 1.3). Padding outputs are never read, so two exact
equivalents are used here:
- `sdpa`: torch's scaled_dot_product_attention with a key-padding mask (no mask at all when
  nothing is padded, which keeps the fused kernel);
- `flash` / `sage`: the varlen kernels on the packed valid tokens (cu_seqlens); padding rows of
  the output are zero.

A backend is chosen once, at model load (`resolve_backend`): an unavailable package is an
error then, never at sampling time.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError, MissingPackageError

log = logging.getLogger(__name__)


@dataclass
class TokenLayout:
    """Which of the B x L joint tokens are real: built once per forward, shared by all blocks."""

    key_mask: torch.Tensor | None  # [B, L] bool, True = real token; None = all real
    _packed: tuple | None = field(default=None, repr=False)

    @classmethod
    def build(cls, n_img: int, text_mask: torch.Tensor | None) -> "TokenLayout":
        if text_mask is None or bool(text_mask.all()):
            return cls(None)
        img = torch.ones(text_mask.shape[0], n_img, dtype=torch.bool, device=text_mask.device)
        return cls(torch.cat([img, text_mask.bool()], dim=1))

    def sdpa_mask(self) -> torch.Tensor | None:
        return None if self.key_mask is None else self.key_mask[:, None, None, :]

    def packing(self, batch: int, length: int, device) -> tuple[torch.Tensor | None, torch.Tensor, int]:
        """(flat indices of real tokens or None, cu_seqlens int32, max sequence length)."""
        if self._packed is None:
            if self.key_mask is None:
                lens = torch.full((batch,), length, dtype=torch.int32, device=device)
                index = None
            else:
                lens = self.key_mask.sum(1, dtype=torch.int32)
                index = self.key_mask.flatten().nonzero().squeeze(1)
            cu = torch.zeros(batch + 1, dtype=torch.int32, device=device)
            cu[1:] = lens.cumsum(0)
            self._packed = (index, cu, int(lens.max()))
        return self._packed


class SDPA:
    name = "sdpa"

    def __call__(self, q, k, v, layout: TokenLayout) -> torch.Tensor:
        """q, k, v: [B, L, heads, head_dim] -> [B, L, heads*head_dim]."""
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=layout.sdpa_mask())
        return out.transpose(1, 2).flatten(2)


VarlenKernel = Callable[..., torch.Tensor]  # (q, k, v, cu_q, cu_k, max_q, max_k) on packed tokens


class Varlen:
    """Packs real tokens and calls a varlen kernel (flash-attn / sageattention signature)."""

    half_dtypes = (torch.float16, torch.bfloat16)

    def __init__(self, name: str, kernel: VarlenKernel, needs_half: bool = True):
        self.name = name
        self.kernel = kernel
        self.needs_half = needs_half
        self._warned = False

    def __call__(self, q, k, v, layout: TokenLayout) -> torch.Tensor:
        batch, length, heads, dim = q.shape
        index, cu, max_len = layout.packing(batch, length, q.device)
        dtype = q.dtype
        if self.needs_half and dtype not in self.half_dtypes:
            self._warn_once(dtype)
            q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
        packed = [t.reshape(batch * length, heads, dim) for t in (q, k, v)]
        if index is not None:
            packed = [t.index_select(0, index) for t in packed]
        out = self.kernel(*packed, cu, cu, max_len, max_len).to(dtype)
        if index is not None:
            full = out.new_zeros(batch * length, heads, dim)
            full.index_copy_(0, index, out)
            out = full
        return out.reshape(batch, length, heads * dim)

    def _warn_once(self, dtype) -> None:
        if not self._warned:
            log.warning("attention=%s computes in bfloat16; inputs of %s are cast for it.", self.name, dtype)
            self._warned = True


def _flash_kernel() -> VarlenKernel:
    return _import("flash_attn", "flash_attn_varlen_func", "flash-attn")


def _sage_kernel() -> VarlenKernel:
    return _import("sageattention", "sageattn_varlen", "sageattention")


def _import(module: str, attr: str, package: str):
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise MissingPackageError(
            f"attention={package.split('-')[0]!r} needs the '{package}' package, which could not be "
            f"imported ({exc}). Install it (pip install {package}) or choose attention='sdpa' "
            "(always available) or 'auto' (best installed).") from exc


BACKENDS = ("auto", "sdpa", "flash", "sage")
_KERNELS = {"flash": _flash_kernel, "sage": _sage_kernel}


def resolve_backend(name: str, device: torch.device | str = "cpu", *, kernel: VarlenKernel | None = None):
    """The backend object for `name` on `device`; raises at load time if it cannot run there.

    `kernel` replaces the imported varlen kernel (the tests give a plain-PyTorch one on CPU).
    """
    if name not in BACKENDS:
        raise InvalidInputError(f"attention={name!r} is unknown; choose one of {list(BACKENDS)}.")
    device = torch.device(device)
    if name == "auto":
        return _auto(device, kernel)
    if name == "sdpa":
        return SDPA()
    if kernel is None:
        if device.type != "cuda":
            raise MissingPackageError(
                f"attention={name!r} runs only on CUDA, but the model device is '{device}'. "
                "Use attention='sdpa' or 'auto'.")
        kernel = _KERNELS[name]()
    return Varlen(name, kernel)


def _auto(device: torch.device, kernel: VarlenKernel | None):
    if device.type == "cuda":
        for name in ("sage", "flash"):
            try:
                return resolve_backend(name, device, kernel=kernel)
            except MissingPackageError:
                continue
    return SDPA()
