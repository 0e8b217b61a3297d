"""Small building blocks of the DiT: embedders, MLPs, modulation helpers.

Modulation can differ per token (token_replace, image_condition.py): a `Leading` value holds one
tensor for the first `count` tokens of the sequence and another for the rest. `Modulation`,
`modulate` and `gated_add` take either a plain tensor or a `Leading`, so a block is the same code
for both; the plain-tensor path is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of t (reference units, e.g. 0..1000), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """time_in / guidance_in / the refiner's t_embedder: keys mlp.0 and mlp.2."""

    def __init__(self, hidden: int, freq_dim: int, ops, **kw):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(ops.Linear(freq_dim, hidden, **kw), nn.SiLU(), ops.Linear(hidden, hidden, **kw))

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(dtype))


class TwoLayerMLP(nn.Module):
    """Linear -> activation -> Linear, with the key names each use site needs."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, act: nn.Module, names: tuple[str, str], ops, **kw):
        super().__init__()
        self._names = names
        self.add_module(names[0], ops.Linear(dim_in, hidden, **kw))
        self.act = act
        self.add_module(names[1], ops.Linear(hidden, dim_out, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = (getattr(self, n) for n in self._names)
        return second(self.act(first(x)))


def vector_embedder(dim_in: int, hidden: int, ops, **kw) -> TwoLayerMLP:
    """vector_in (CLIP pooled -> hidden): in_layer, out_layer."""
    return TwoLayerMLP(dim_in, hidden, hidden, nn.SiLU(), ("in_layer", "out_layer"), ops, **kw)


def text_projection(dim_in: int, hidden: int, ops, **kw) -> TwoLayerMLP:
    """The refiner's c_embedder: linear_1, linear_2."""
    return TwoLayerMLP(dim_in, hidden, hidden, nn.SiLU(), ("linear_1", "linear_2"), ops, **kw)


def feed_forward(hidden: int, mlp_hidden: int, act: nn.Module, ops, **kw) -> TwoLayerMLP:
    """Block MLPs: fc1, fc2."""
    return TwoLayerMLP(hidden, mlp_hidden, hidden, act, ("fc1", "fc2"), ops, **kw)


def gelu_tanh() -> nn.Module:
    return nn.GELU(approximate="tanh")


class Modulation(nn.Module):
    """SiLU(vec) -> Linear(hidden -> n*hidden), chunked into n [B, 1, hidden] tensors."""

    def __init__(self, hidden: int, n: int, ops, **kw):
        super().__init__()
        self.n = n
        self.linear = ops.Linear(hidden, n * hidden, **kw)

    def forward(self, vec: "torch.Tensor | Leading") -> list:
        if isinstance(vec, Leading):  # both vectors through the one linear, then split again
            batch = vec.first.shape[0]
            both = self.linear(F.silu(torch.cat([vec.first, vec.rest]))).unsqueeze(1).chunk(self.n, dim=-1)
            return [Leading(c[:batch], c[batch:], vec.count) for c in both]
        return self.linear(F.silu(vec)).unsqueeze(1).chunk(self.n, dim=-1)


@dataclass(frozen=True)
class Leading:
    """A per-token value: `first` for tokens [0, count) of the sequence, `rest` for the others.
    Each broadcasts like the plain tensor it stands for ([B, hidden] or [B, 1, hidden])."""

    first: torch.Tensor
    rest: torch.Tensor
    count: int


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """The non-affine LayerNorm (eps 1e-6) used in the DiT blocks and the final layer."""
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


def modulate(x: torch.Tensor, shift, scale) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift (shift/scale: tensors or `Leading` pairs)."""
    if isinstance(shift, Leading):
        n = shift.count
        return torch.cat([modulate(x[:, :n], shift.first, scale.first),
                          modulate(x[:, n:], shift.rest, scale.rest)], dim=1)
    if shift.shape[0] == 1:  # one sample: LayerNorm's own affine does it in a single pass
        return F.layer_norm(x, (x.shape[-1],), (1 + scale).flatten(), shift.flatten(), eps=1e-6)
    return torch.addcmul(shift, layer_norm(x), 1 + scale)


def gated_add(x: torch.Tensor, gate, y: torch.Tensor) -> torch.Tensor:
    """x + gate * y (gate: a tensor or a `Leading` pair)."""
    if isinstance(gate, Leading):
        n = gate.count
        return torch.cat([torch.addcmul(x[:, :n], gate.first, y[:, :n]),
                          torch.addcmul(x[:, n:], gate.rest, y[:, n:])], dim=1)
    return torch.addcmul(x, gate, y)
