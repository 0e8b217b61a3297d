"""CFG parallel (SPEC_NEXT 1.4): under true CFG the cond half runs on CFG rank 0 and the uncond
half on CFG rank 1; an all-gather of the two velocities then gives every rank both, and every
rank combines them with the same operations (bit-identical latents on all ranks).

`GuidedVelocity` (sampling/guidance.py) takes this object as its `cfg_split`; installed on a
model by ParallelPolicy it is `model.parallel.cfg_split`. The cache sees the branch
"cond+uncond": its indicator is reduced over both halves (ParallelPolicy.token_sums), so it
takes the decision a batched [uncond, cond] forward takes in one process.
"""
from __future__ import annotations

import torch

from .comm import Traffic, gather_batch

BRANCH = "cond+uncond"


class CFGSplit:
    def __init__(self, group, cfg_rank: int, traffic: Traffic):
        self.group = group
        self.cfg_rank = cfg_rank
        self.traffic = traffic

    @property
    def half(self) -> str:
        return "cond" if self.cfg_rank == 0 else "uncond"

    def prompt(self, positive, negative):
        """This rank's half of the guidance pair."""
        return positive if self.cfg_rank == 0 else negative

    def combine(self, v: torch.Tensor, scale: float, rule=None) -> torch.Tensor:
        """v_u + s * (v_c - v_u) from this rank's half and the other rank's; `rule(v_u, v_c, s)`
        replaces that formula (GuidanceSettings.combine: CFG-Zero*), the same on every rank."""
        both = gather_batch(v, self.group, self.traffic)       # [2, B, ...]: cond, uncond
        v_c, v_u = both[0], both[1]
        if rule is not None:
            return rule(v_u, v_c, scale)
        return v_u + (v_c - v_u) * scale
