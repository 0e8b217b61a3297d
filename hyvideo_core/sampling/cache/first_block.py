"""First-block cache: run block 0 and reuse the other blocks' residual while block 0's own
residual stays close to what it was at the last fully computed step.

Step: img1 = block0(img); r1 = img1 - img. If mean|r1 - r1_ref| / mean|r1_ref| < threshold (and
the step may skip), return img1 + cached (img_out - img1); otherwise run the remaining blocks,
cache their residual and take r1 as the new reference. Comparing against the last computed
step (not the previous step) keeps the drift of a run of skips bounded by the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .policy import StepCache, relative_l1, token_sums


@dataclass
class FirstBlockState:
    reference: torch.Tensor | None = None   # block-0 residual at the last computed step
    rest: torch.Tensor | None = None        # residual of blocks 1.. at the last computed step


class FirstBlockCache(StepCache):
    name = "first_block"

    def __init__(self, threshold: float = 0.05, start_step: int = 0, end_step: int | None = None,
                 storage="main"):
        super().__init__(threshold, start_step, end_step, storage)

    def start_run(self, total_steps: int) -> None:
        super().start_run(total_steps)
        self.changes: list[tuple[int, str, float | None, bool]] = []

    def run(self, model, e) -> torch.Tensor:
        st: FirstBlockState = self.state(FirstBlockState)
        img1, txt1 = model.run_blocks(e.img, e.txt, e.ctx, 0, 1)
        first_residual = img1 - e.img
        change = None
        skip = False
        if self.may_skip_now() and st.reference is not None and st.rest.shape == img1.shape:
            change = relative_l1(first_residual, st.reference, token_sums(model))
            skip = change < self.threshold
        self.changes.append((self.step, self.branch, change, skip))
        self.count(skip)
        if skip:
            return img1 + self.load(st.rest, img1)
        img, _ = model.run_blocks(img1, txt1, e.ctx, 1)
        st.rest = self.store(img - img1)
        st.reference = self.store(first_residual)
        return img
