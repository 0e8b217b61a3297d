"""TeaCache for HunyuanVideo (SPEC 6): skip all blocks while block 0's modulated input changes little.

Indicator m = double_blocks[0]'s modulated image input LN(img)*(1+scale1)+shift1 over the whole
batch of the forward. On every step that may skip, the rescaled relative L1 change
f(mean|m - m_prev| / mean|m_prev|) is added to an accumulator; below the threshold the blocks are
skipped (img = img_in(x) + cached residual), otherwise they run and the accumulator resets.
The first and last steps always run (and reset). m_prev is updated on every step.

Unlike the official script (one class-level state), each branch the loop names ("cond",
"uncond", or "cond+uncond" for a batched true-CFG forward, which is the official measurement)
keeps its own state, and all state is reset at the start of every run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .policy import StepCache, relative_l1, token_sums

# The official HunyuanVideo rescaling polynomial, highest power first (TeaCache @7c10efc).
HUNYUAN_COEFFICIENTS = (7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02)


def rescale(relative_change: float, coefficients=HUNYUAN_COEFFICIENTS) -> float:
    return float(np.polyval(coefficients, relative_change))


@dataclass
class TeaCacheState:
    accumulated: float = 0.0
    previous_input: torch.Tensor | None = None
    residual: torch.Tensor | None = None


@dataclass(frozen=True)
class TeaCacheDecision:
    step: int
    branch: str
    relative_l1: float | None   # None when the step is always computed
    accumulated: float           # the accumulator after this step's decision
    skipped: bool


class TeaCache(StepCache):
    name = "teacache"

    def __init__(self, threshold: float = 0.15, start_step: int = 0, end_step: int | None = None,
                 storage="main", coefficients=HUNYUAN_COEFFICIENTS):
        self.coefficients = tuple(coefficients)
        super().__init__(threshold, start_step, end_step, storage)

    def start_run(self, total_steps: int) -> None:
        super().start_run(total_steps)
        self.decisions: list[TeaCacheDecision] = []

    def observe(self, modulated: torch.Tensor, reusable: bool = True, sums=None) -> bool:
        """Record this step's indicator; True when the blocks may be skipped. `reusable` is False
        when there is no cached residual of the right shape (then the step computes); `sums`
        reduces the indicator across ranks (policy.token_sums)."""
        st: TeaCacheState = self.state(TeaCacheState)
        change = None
        skip = False
        if self.may_skip_now() and st.previous_input is not None and reusable:
            change = relative_l1(modulated, st.previous_input, sums)
            st.accumulated += rescale(change, self.coefficients)
            skip = st.accumulated < self.threshold
        if not skip:
            st.accumulated = 0.0
        st.previous_input = self.store(modulated)
        self.decisions.append(TeaCacheDecision(self.step, self.branch, change, st.accumulated, skip))
        return skip

    def run(self, model, e) -> torch.Tensor:
        st: TeaCacheState = self.state(TeaCacheState)
        reusable = st.residual is not None and st.residual.shape == e.img.shape
        skip = self.observe(model.modulated_image_input(e), reusable, token_sums(model))
        self.count(skip)
        if skip:
            return e.img + self.load(st.residual, e.img)
        img, _ = model.run_blocks(e.img, e.txt, e.ctx)
        st.residual = self.store(img - e.img)
        return img
