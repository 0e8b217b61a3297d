"""The parallel configuration and its process groups (SPEC_NEXT 1.1, 1.2, 1.4).

World size = ulysses_degree x ring_degree x (2 if cfg_parallel). Ranks are laid out like xDiT
and yunchang ("ulysses low"):

    rank = cfg_rank * SP + sp_rank,   sp_rank = ring_rank * U + ulysses_rank,   SP = U * R

so a Ulysses group is U contiguous ranks, a ring group is R ranks strided by U, and the CFG
group pairs the ranks with the same sp_rank. Sequence-parallel rank s holds the image tokens
[s * n_local, (s + 1) * n_local) of the padded sequence.

`check` is pure (no process group needed); `build_groups` calls torch.distributed.new_group in
the same order on every rank, as new_group requires.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from ..errors import InvalidInputError


@dataclass(frozen=True)
class ParallelConfig:
    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_parallel: bool = False

    @property
    def sp_degree(self) -> int:
        return self.ulysses_degree * self.ring_degree

    @property
    def cfg_degree(self) -> int:
        return 2 if self.cfg_parallel else 1

    @property
    def world_size(self) -> int:
        return self.sp_degree * self.cfg_degree

    def describe(self) -> str:
        cfg = " x 2 (cfg_parallel)" if self.cfg_parallel else ""
        return f"ulysses_degree={self.ulysses_degree} x ring_degree={self.ring_degree}{cfg}"

    def check(self, world_size: int | None = None, heads: int | None = None) -> None:
        """Raise InvalidInputError naming the allowed values; `heads` = model.config.heads."""
        for name in ("ulysses_degree", "ring_degree"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name}: must be a whole number >= 1 (1 = off), got {value!r}.")
        if not isinstance(self.cfg_parallel, bool):
            raise InvalidInputError(f"cfg_parallel: must be True or False, got {self.cfg_parallel!r}.")
        if heads is not None and heads % self.ulysses_degree:
            ring_hint = (f"; for {self.sp_degree} sequence-parallel processes use e.g. "
                         f"{_example(self.sp_degree, heads)}") if self.sp_degree > 1 else ""
            raise InvalidInputError(
                f"ulysses_degree={self.ulysses_degree} does not divide the model's {heads} attention heads "
                f"(Ulysses splits the heads); allowed ulysses_degree values: {_divisors(heads)}; ring_degree "
                f"takes any value{ring_hint}.")
        if world_size is not None and world_size != self.world_size:
            raise InvalidInputError(
                f"parallel degrees: {self.describe()} = {self.world_size} processes, but the world size is "
                f"{world_size}; with {world_size} processes choose one of: "
                f"{', '.join(allowed_layouts(world_size, heads)) or 'none (no layout fits)'}.")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _example(sp: int, heads: int) -> str:
    u = max(d for d in _divisors(heads) if sp % d == 0)
    return f"ulysses_degree={u}, ring_degree={sp // u}"


def allowed_layouts(world_size: int, heads: int | None = None) -> list[str]:
    """Every (ulysses, ring, cfg) layout of `world_size` processes whose Ulysses degree divides heads."""
    out = []
    for cfg in (False, True):
        sp, rest = divmod(world_size, 2 if cfg else 1)
        if rest or sp < 1:
            continue
        for u in _divisors(sp):
            if heads is not None and heads % u:
                continue
            out.append(f"ulysses_degree={u} ring_degree={sp // u}" + (" cfg_parallel" if cfg else ""))
    return out


@dataclass
class ParallelGroups:
    """This rank's place in the layout and its sub-groups (None where the degree is 1)."""

    config: ParallelConfig
    rank: int
    sp_rank: int
    ulysses_rank: int
    ring_rank: int
    cfg_rank: int
    sp: object | None
    ulysses: object | None
    ring: object | None
    cfg: object | None
    ring_ranks: list[int]       # global ranks of this rank's ring group, by ring rank
    cfg_ranks: list[int]        # global ranks of this rank's CFG group, by CFG rank

    @property
    def ring_next(self) -> int:
        return self.ring_ranks[(self.ring_rank + 1) % len(self.ring_ranks)]

    @property
    def ring_prev(self) -> int:
        return self.ring_ranks[(self.ring_rank - 1) % len(self.ring_ranks)]


def build_groups(config: ParallelConfig, timeout: timedelta | None = None) -> ParallelGroups:
    """Create the SP, Ulysses, ring and CFG groups (collective: every rank calls it)."""
    if not dist.is_available() or not dist.is_initialized():
        raise InvalidInputError(
            "parallel: torch.distributed is not initialised; start the processes with torchrun (or call "
            "torch.distributed.init_process_group) before building the parallel policy.")
    world, rank = dist.get_world_size(), dist.get_rank()
    config.check(world_size=world)
    u, r, c = config.ulysses_degree, config.ring_degree, config.cfg_degree
    sp = u * r
    cfg_rank, sp_rank = divmod(rank, sp)
    ring_rank, ulysses_rank = divmod(sp_rank, u)
    kw = {} if timeout is None else {"timeout": timeout}

    def make(rank_lists: list[list[int]]):
        mine = None
        for ranks in rank_lists:   # every rank creates every group, in the same order
            group = dist.new_group(ranks, **kw)
            if rank in ranks:
                mine = group
        return mine

    sp_lists = [[ci * sp + s for s in range(sp)] for ci in range(c)]
    ulysses_lists = [[ci * sp + ri * u + ui for ui in range(u)] for ci in range(c) for ri in range(r)]
    ring_lists = [[ci * sp + ri * u + ui for ri in range(r)] for ci in range(c) for ui in range(u)]
    cfg_lists = [[ci * sp + s for ci in range(c)] for s in range(sp)]
    groups = ParallelGroups(
        config, rank, sp_rank, ulysses_rank, ring_rank, cfg_rank,
        sp=make(sp_lists) if sp > 1 else None,
        ulysses=make(ulysses_lists) if u > 1 else None,
        ring=make(ring_lists) if r > 1 else None,
        cfg=make(cfg_lists) if c > 1 else None,
        ring_ranks=next(x for x in ring_lists if rank in x),
        cfg_ranks=next(x for x in cfg_lists if rank in x))
    return groups
