"""The parallel policy: sequence parallelism and CFG parallel applied to a DiT from outside.

    # every rank, after dist.init_process_group (NCCL on CUDA, after torch.cuda.set_device(local
    # rank); gloo on CPU), with the same model loaded:
    policy = ParallelPolicy(ParallelConfig(ulysses_degree=2, ring_degree=1, cfg_parallel=True))
    policy.install(model, identity="...")    # checks, then sets model.parallel
    result = sample(model, embeds, options, ...)   # the one loop, unchanged, on every rank

Installed as `model.parallel`, the transformer calls two hooks around the token sequence
(transformer.py; its default `Unsplit` does nothing):
- `split(e)` after the embeddings: the N image tokens are padded to a multiple of the
  sequence-parallel degree SP (zeros; never truncated) and each rank keeps its n = ceil(N/SP)
  consecutive tokens, with the matching rows of the RoPE table (identity rotation on padding).
  The text tokens, the text mask and the conditioning vector stay whole on every rank (SPEC_NEXT
  1.1). The block context gets a ShardLayout and the ParallelAttention wrapper around the
  model's backend: the blocks see nothing else.
- `gather(y, e)` after the final layer (per token, so it commutes with the split): an
  all-gather over the SP group, the padding dropped, before unpatchify.
`token_sums` gives the cache policies their indicator sums over the real tokens of all ranks
(so every rank takes the one-process decision), and `cfg_split` is the CFG-parallel object
GuidedVelocity uses.

Every rank must run the same calls in the same order (same latent size, steps, prompts, seed):
`check_same` compares anything the caller wants to be sure of.
"""
from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import InvalidInputError
from .attention import ParallelAttention, ShardLayout
from .cfg import CFGSplit
from .comm import Traffic, gather_tokens
from .config import ParallelConfig, ParallelGroups, build_groups
from .identity import check_same, check_same_model


class ParallelPolicy:
    def __init__(self, config: ParallelConfig, *, timeout: timedelta | None = None,
                 groups: ParallelGroups | None = None):
        config.check()
        self.config = config
        self.groups = groups if groups is not None else build_groups(config, timeout)
        self.traffic = Traffic()
        self.cfg_split = (CFGSplit(self.groups.cfg, self.groups.cfg_rank, self.traffic)
                          if config.cfg_parallel else None)
        self.model = None
        self._shard: tuple[int, int] | None = None      # (N, n) of the last forward

    @property
    def rank(self) -> int:
        return self.groups.rank

    # -- installing ------------------------------------------------------------------------
    def install(self, model, identity: str | None = None) -> "ParallelPolicy":
        """Check (collectively) that this layout fits the model and that every rank loaded the
        same model, then become `model.parallel`. `identity`: how the model was loaded (file
        path, size, format, LoRAs and strengths), compared across ranks."""
        check_same_model(model, identity)
        self.config.check(world_size=dist.get_world_size(), heads=model.config.heads)
        previous = getattr(model, "parallel", None)
        if isinstance(previous, ParallelPolicy) and previous is not self:
            previous.remove()
        model.parallel = self
        self.model = model
        return self

    def remove(self) -> None:
        from ..model.transformer import Unsplit
        model, self.model = self.model, None
        if model is not None and model.parallel is self:
            model.parallel = Unsplit()

    def check_same(self, name: str, value) -> None:
        """Raise on every rank when `value` (e.g. the sampling options, the latent size) differs."""
        check_same(name, value)

    # -- hooks the transformer calls -------------------------------------------------------
    def split(self, e):
        from ..model.transformer import Embedded
        sp = self.config.sp_degree
        tokens = e.img.shape[1]
        if sp == 1:
            self._shard = (tokens, tokens)
            return e
        local = math.ceil(tokens / sp)
        start = self.groups.sp_rank * local
        self._shard = (tokens, local)
        img = _take(e.img, 1, start, local, 0.0)
        rope = _take(e.ctx.rope, 0, start, local, 1.0)
        key_mask = e.ctx.layout.key_mask
        text_mask = None if key_mask is None else key_mask[:, tokens:]
        layout = ShardLayout(tokens, local, text_mask)
        attention = ParallelAttention(e.ctx.attention, self.groups, self.traffic)
        ctx = dataclasses.replace(e.ctx, rope=rope, layout=layout, attention=attention)
        return Embedded(img, e.txt, ctx, e.grid)

    def gather(self, y: torch.Tensor, e) -> torch.Tensor:
        if self.config.sp_degree == 1:
            return y
        tokens = e.ctx.layout.tokens
        return gather_tokens(y, self.groups.sp, self.traffic)[:, :tokens]

    # -- cache indicators ------------------------------------------------------------------
    def token_sums(self, *tensors: torch.Tensor) -> list[float]:
        """Sums of per-token tensors [B, n, ...] over the real image tokens of every rank (all
        sequence shards and both CFG halves): the one-process sums of the whole batch."""
        if self._shard is None:
            raise InvalidInputError("parallel: token_sums called before a forward split the tokens.")
        tokens, local = self._shard
        start = self.groups.sp_rank * local if self.config.sp_degree > 1 else 0
        real = max(0, min(local, tokens - start))
        for t in tensors:
            if t.shape[1] != local:
                raise InvalidInputError(
                    f"parallel: token_sums expects this rank's {local} image tokens, got shape {list(t.shape)}.")
        sums = torch.stack([t[:, :real].float().sum() for t in tensors])
        if dist.get_world_size() > 1:
            dist.all_reduce(sums)
        return sums.tolist()


def _take(t: torch.Tensor, dim: int, start: int, length: int, fill: float) -> torch.Tensor:
    """t[start:start+length] along `dim`, padded with `fill` past the end."""
    have = max(0, min(length, t.shape[dim] - start))
    part = t.narrow(dim, min(start, t.shape[dim]), have)
    if have == length:
        return part
    shape = list(t.shape)
    shape[dim] = length - have
    return torch.cat([part, torch.full(shape, fill, dtype=t.dtype, device=t.device)], dim=dim)
