"""Sequence-parallel joint attention: Ulysses, ring, and both (USP), around the model's backend.

Each rank's blocks see [its image shard ; all text tokens]: q, k, v [B, n + Lt, H, D] where the n
image tokens are this rank's slice of the padded image sequence and the Lt text tokens are
replicated on every rank (SPEC_NEXT 1.1: text is not split). The result must equal one process,
in which every query attends the N real image tokens and its sample's real text tokens
(attention.py: the text padding is masked as keys; padding outputs are never read).

1. Ulysses (degree U): one all-to-all turns the image q/k/v (stacked, one collective) from
   sequence-sharded / all heads into U*n tokens / H/U heads. Text q/k/v need no communication:
   every rank slices its own heads out of its replicated copy (SPEC_NEXT 1.2: joint K/V are
   head-sliced, not sent).
2. Without a ring, the model's own backend (sdpa / flash / sage) runs on
   [U*n image ; Lt text] with a key mask that hides the image padding and the text padding:
   exactly the one-process softmax.
3. With a ring (degree R), the K/V of the U*n image tokens travel round the ring group; every
   chunk's partial result (out, lse) is merged by online softmax (lse.py). A chunk enters with
   its padding cut off (padding is always at the end of the sequence, so each chunk's real
   tokens are a prefix) and a chunk that is all padding is skipped. The text K/V are added once,
   from the local copy (the reference adds them once, on the last ring step), per sample when
   the samples' text masks differ. Text queries go through the same ring, so every ring rank
   gets the text output for its heads.
4. The image output goes back with the inverse all-to-all; the text output (H/U heads, identical
   on every ring rank) is all-gathered over the Ulysses group.

Why not yunchang (PyPI 0.6.4, tried on this CPU with gloo): its LongContextAttention has no
attention-mask argument at all (so neither the per-sample text padding of a batched-CFG forward
nor the padded image tokens of a sequence that does not divide can be masked) and no joint
(text) tensors (those live in xDiT, not yunchang); its torch "math" ring kernel returns a zero
log-sum-exp, which gave a max error of 0.95 against one-process attention at ring degree 2,
and its torch flash / efficient kernels are CUDA-only ops (NotImplementedError on CPU); its
process groups are one global singleton. So the collectives are written here with
torch.distributed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model.attention import TokenLayout
from .comm import RingExchange, Traffic, gather_heads, heads_to_seq, seq_to_heads
from .config import ParallelGroups
from .lse import OnlineSoftmax, attend


@dataclass
class ShardLayout:
    """The token layout of one sequence-parallel forward, shared by every block."""

    tokens: int                        # N real image tokens (whole sequence)
    local: int                         # n image tokens on each rank (padded: sp * n >= N)
    text_mask: torch.Tensor | None     # [B, Lt] bool, True = real; None = all real
    _inner: dict = field(default_factory=dict, repr=False)

    def real_in(self, start: int, length: int) -> int:
        """How many of the padded image positions [start, start + length) are real tokens."""
        return max(0, min(length, self.tokens - start))

    def text_keep(self) -> list[torch.Tensor]:
        """Per sample, the indices of its real text tokens (computed once per forward)."""
        if "keep" not in self._inner:
            self._inner["keep"] = [row.nonzero().squeeze(1) for row in self.text_mask]
        return self._inner["keep"]

    def inner_layout(self, gathered: int, batch: int, text: int, device) -> TokenLayout:
        """The backend's layout for [gathered image tokens ; text], hiding the image padding and
        the text padding (built once per forward, shared by the blocks)."""
        key = (gathered, batch, text)
        if key not in self._inner:
            if gathered == self.tokens and self.text_mask is None:
                self._inner[key] = TokenLayout(None)
            else:
                img = (torch.arange(gathered, device=device) < self.tokens).expand(batch, gathered)
                txt = self.text_mask
                if txt is None:
                    txt = torch.ones(batch, text, dtype=torch.bool, device=device)
                self._inner[key] = TokenLayout(torch.cat([img, txt.to(device)], dim=1))
        return self._inner[key]


class ParallelAttention:
    """Backend `(q, k, v, layout) -> [B, L, hidden]` for a ShardLayout, wrapping `inner`
    (the model's backend, used on the gathered sequence when there is no ring)."""

    def __init__(self, inner, groups: ParallelGroups, traffic: Traffic):
        self.inner = inner
        self.groups = groups
        self.traffic = traffic
        self.name = f"{getattr(inner, 'name', 'attention')}+usp"

    def __call__(self, q, k, v, layout: ShardLayout) -> torch.Tensor:
        g = self.groups
        u = g.config.ulysses_degree
        n = layout.local
        heads = q.shape[2]
        hh = heads // u
        h0 = g.ulysses_rank * hh
        img = torch.stack([q[:, :n], k[:, :n], v[:, :n]])          # [3, B, n, H, D]
        txt = torch.stack([t[:, n:, h0:h0 + hh] for t in (q, k, v)])  # [3, B, Lt, H/U, D], own heads
        if u > 1:
            img = seq_to_heads(img, g.ulysses, self.traffic)        # [3, B, U*n, H/U, D]
        gathered = img.shape[2]
        if g.config.ring_degree == 1:
            out = self._local(img, txt, layout, gathered)
        else:
            out = self._ring(img, txt, layout, gathered)
        batch, lt = txt.shape[1], txt.shape[2]
        img_out = out[:, :gathered]
        txt_out = out[:, gathered:].reshape(batch, lt, hh * q.shape[3])
        if u > 1:
            img_out = heads_to_seq(img_out, g.ulysses, self.traffic)
            txt_out = gather_heads(txt_out, g.ulysses, self.traffic)
        else:
            img_out = img_out.reshape(batch, n, heads * q.shape[3])
        return torch.cat([img_out, txt_out], dim=1)

    # -- no ring: the model's backend on the whole (Ulysses-gathered) sequence ---------------
    def _local(self, img, txt, layout: ShardLayout, gathered: int) -> torch.Tensor:
        qkv = torch.cat([img, txt], dim=2)                          # [3, B, M + Lt, H/U, D]
        inner = layout.inner_layout(gathered, qkv.shape[1], txt.shape[2], qkv.device)
        out = self.inner(qkv[0], qkv[1], qkv[2], inner)            # [B, M + Lt, H/U*D]
        return out.unflatten(-1, (img.shape[3], img.shape[4]))

    # -- ring: K/V chunks round the ring, online-softmax merge -------------------------------
    def _ring(self, img, txt, layout: ShardLayout, gathered: int) -> torch.Tensor:
        g = self.groups
        r = g.config.ring_degree
        # [B, H/U, M + Lt, D] queries; [2, B, H/U, M, D] the circulating K/V chunk
        q = torch.cat([img[0], txt[0]], dim=1).transpose(1, 2)
        kv = img[1:].transpose(2, 3).contiguous()
        acc = OnlineSoftmax()
        ring = RingExchange(g.ring, g.ring_next, g.ring_prev, self.traffic)
        for step in range(r):
            if step + 1 < r:
                ring.start(kv)
            source = (g.ring_rank - step) % r                       # whose chunk this is
            real = layout.real_in(source * gathered, gathered)
            if real > 0:
                acc.add(*attend(q, kv[0][:, :, :real], kv[1][:, :, :real]))
            if step + 1 < r:
                kv = ring.wait()
        self._add_text(acc, q, txt, None if layout.text_mask is None else layout.text_keep())
        return acc.result(q.dtype).transpose(1, 2)                  # [B, M + Lt, H/U, D]

    @staticmethod
    def _add_text(acc: OnlineSoftmax, q, txt, keeps: list[torch.Tensor] | None) -> None:
        k, v = txt[1].transpose(1, 2), txt[2].transpose(1, 2)      # [B, H/U, Lt, D]
        if keeps is None:
            acc.add(*attend(q, k, v))
            return
        outs, lses = [], []
        for b, keep in enumerate(keeps):
            out, lse = attend(q[b:b + 1], k[b:b + 1].index_select(2, keep), v[b:b + 1].index_select(2, keep))
            outs.append(out)
            lses.append(lse)
        acc.add(torch.cat(outs), torch.cat(lses))
