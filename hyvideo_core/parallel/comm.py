"""The collectives of sequence parallelism, over torch.distributed (NCCL on CUDA, gloo on CPU).

Every function takes the group (None never reaches here: callers skip a degree of 1) and a
`Traffic` counter that adds up what this rank puts on the wire, so the benchmark can report the
bytes each rank sends per step as measured where they are sent.

- `seq_to_heads`: all-to-all [.., B, n, H, D] sequence-sharded, all heads ->
  [.., B, U*n, H/U, D] whole (Ulysses) sequence, heads sharded; `heads_to_seq` is its inverse.
- `gather_heads`: all-gather of a head-sharded [B, L, H/U*D] tensor (the replicated text
  tokens' attention output) -> [B, L, H*D].
- `gather_tokens`: all-gather along the token axis (the final layer's output).
- `RingExchange`: passes a K/V buffer to the next ring rank while receiving the previous
  rank's, so the next chunk's transfer overlaps the current chunk's attention.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Traffic:
    """Bytes this rank sent, by collective (what leaves the rank, not what it keeps)."""

    sent: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, nbytes: int) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + int(nbytes)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def reset(self) -> None:
        self.sent.clear()


def _all_gather(t: torch.Tensor, group) -> torch.Tensor:
    """[world, *t.shape]: every rank's t, by group rank (one collective, into one buffer)."""
    world = dist.get_world_size(group)
    t = t.contiguous()
    out = t.new_empty(world * t.shape[0], *t.shape[1:])     # the concatenated form every backend takes
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, t, group=group)
    return out.view(world, *t.shape)


def seq_to_heads(x: torch.Tensor, group, traffic: Traffic) -> torch.Tensor:
    """[S, B, n, H, D] (S stacked tensors, e.g. q, k, v) -> [S, B, U*n, H/U, D].

    Source rank u's tokens land at [u*n, (u+1)*n); this rank keeps heads [u_self*H/U, ...)."""
    world = dist.get_world_size(group)
    s, b, n, h, d = x.shape
    send = x.reshape(s, b, n, world, h // world, d).permute(3, 0, 1, 2, 4, 5).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    traffic.add("all_to_all", send.numel() * send.element_size() * (world - 1) // world)
    # recv [U(source), S, B, n, H/U, D] -> [S, B, U*n, H/U, D]
    return recv.permute(1, 2, 0, 3, 4, 5).reshape(s, b, world * n, h // world, d)


def heads_to_seq(x: torch.Tensor, group, traffic: Traffic) -> torch.Tensor:
    """[B, U*n, H/U, D] -> [B, n, H*D]: each rank gets its own tokens back with every head."""
    world = dist.get_world_size(group)
    b, m, hh, d = x.shape
    n = m // world
    send = x.reshape(b, world, n, hh, d).permute(1, 0, 2, 3, 4).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    traffic.add("all_to_all", send.numel() * send.element_size() * (world - 1) // world)
    # recv [U(head group), B, n, H/U, D] -> [B, n, U*H/U*D]
    return recv.permute(1, 2, 0, 3, 4).reshape(b, n, world * hh * d)


def gather_heads(x: torch.Tensor, group, traffic: Traffic) -> torch.Tensor:
    """[B, L, H/U*D] head-sharded -> [B, L, H*D] (head group u at [u*H/U*D, ...))."""
    world = dist.get_world_size(group)
    out = _all_gather(x, group)
    traffic.add("all_gather", x.numel() * x.element_size() * (world - 1))
    return out.permute(1, 2, 0, 3).reshape(x.shape[0], x.shape[1], world * x.shape[2])


def gather_tokens(x: torch.Tensor, group, traffic: Traffic) -> torch.Tensor:
    """[B, n, C] -> [B, P*n, C], rank p's tokens at [p*n, (p+1)*n)."""
    world = dist.get_world_size(group)
    out = _all_gather(x, group)
    traffic.add("all_gather", x.numel() * x.element_size() * (world - 1))
    return out.permute(1, 0, 2, 3).reshape(x.shape[0], world * x.shape[1], x.shape[2])


def gather_batch(x: torch.Tensor, group, traffic: Traffic) -> torch.Tensor:
    """[B, ...] -> [P, B, ...] (CFG group: rank c's tensor at index c)."""
    world = dist.get_world_size(group)
    out = _all_gather(x, group)
    traffic.add("all_gather", x.numel() * x.element_size() * (world - 1))
    return out


class RingExchange:
    """One ring step: send `current` to the next rank, receive the previous rank's into a
    buffer; `wait()` returns the received tensor. Batched so NCCL pairs the send and the
    receive (no deadlock when the next and previous rank are the same, ring degree 2)."""

    def __init__(self, group, next_rank: int, prev_rank: int, traffic: Traffic):
        self.group, self.next, self.prev, self.traffic = group, next_rank, prev_rank, traffic
        self._requests = None
        self._buffer = None
        self._sending = None       # kept alive until the send completed

    def start(self, current: torch.Tensor) -> None:
        current = current.contiguous()
        self._buffer = torch.empty_like(current)
        ops = [dist.P2POp(dist.isend, current, self.next, self.group),
               dist.P2POp(dist.irecv, self._buffer, self.prev, self.group)]
        self._requests = dist.batch_isend_irecv(ops)
        self._sending = current
        self.traffic.add("ring", current.numel() * current.element_size())

    def wait(self) -> torch.Tensor:
        for request in self._requests:
            request.wait()
        received, self._buffer, self._requests, self._sending = self._buffer, None, None, None
        return received
