"""EasyCache for HunyuanVideo (SPEC_NEXT 5.1): reuse the blocks' transformation while the change
it would make, predicted from the change of its input, stays small.

The rule (official HunyuanVideo script and paper arXiv 2507.02860), per forward of a branch:
- in = what enters the transformation, out = what leaves it; a computed step caches out and in.
- k = mean|out_c - out_c'| / mean|in_c - in_c'|, the transformation rate between the last two
  computed steps c' < c (set from the second computed step on).
- A step in the warm-up (the first round(warmup * steps) steps; the official 5 of 50), the last
  step, or a step outside [start_step, end_step) computes and resets the accumulator E = 0.
- Any other step, once k exists: eps = k * mean|in_t - in_{t-1}| / mean|out_c| (in_{t-1} is the
  input of the branch's previous forward, computed or skipped, as the official script keeps
  it); E += eps. If E < threshold the step is skipped: out = in_t + (out_c - in_c), the cached
  transformation. Otherwise it computes and E = 0.
- Official HunyuanVideo threshold 0.025 (ComfyUI's generic node uses 0.2 on its own
  measurements).

How the reference maps onto this policy. The official script measures the raw latent x entering
the transformer and the velocity v leaving it, and caches v - x. A policy sees what enters the
blocks and what leaves them, so here in = e.img (the image tokens from the patch embedding,
[B, N, hidden]) and out = the image tokens after the last single block; the cached
transformation is the blocks' residual, and the final layer and unpatchify always run (on
in_t + residual, with the current step's modulation), as in TeaCache and MagCache.
- The input side makes the same decisions exactly: the patch embedding is a linear map of x plus
  a bias, so every input difference in_t - in_s is that map applied to x_t - x_s (the bias
  cancels), and x enters the rule only through the ratio mean|dx_t| / mean|dx_c| (eps =
  (mean|dout_c| / mean|out_c|) * (mean|dx_t| / mean|dx_c|)): any common scale of the map
  cancels; what remains is that mean|.| is taken over embedded tokens instead of latent values.
- The output side measures the relative change of the blocks' output (the velocity before the
  final layer) instead of the velocity itself. So the indicators are these token quantities, and
  the policy takes, decision for decision, the reference rule's decisions on them (the tests
  replay the rule on a recorded run); the published 0.025 was calibrated on the latent/velocity
  pair and is the default, not a promise of the same skip count.

Per branch ("cond", "uncond", "cond+uncond" for batched true CFG) the state is separate (the
official script holds one state because HunyuanVideo uses embedded guidance); all state resets in
start_run. Under a parallel policy every mean is a sum over the real tokens of every rank
(token_sums, one all-reduce per decision and per computed step); the counts cancel in each ratio,
so every rank takes the same decision as one process.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from .policy import StepCache, token_sums


@dataclass
class EasyCacheState:
    accumulated: float = 0.0
    rate: float | None = None                   # k
    previous_input: torch.Tensor | None = None  # in of this branch's previous forward
    computed_input: torch.Tensor | None = None  # in at the last computed forward
    computed_output: torch.Tensor | None = None # out at the last computed forward
    output_sum: float | None = None             # sum|out| at the last computed forward


@dataclass(frozen=True)
class EasyCacheDecision:
    step: int
    branch: str
    predicted: float | None   # eps; None when the step computes without a prediction
    accumulated: float        # E after this step's decision
    rate: float | None        # k this step's prediction used (or None)
    skipped: bool


def local_sums(*tensors: torch.Tensor) -> list[float]:
    """token_sums' contract in one process: each tensor's float32 sum."""
    return [float(t.float().sum()) for t in tensors]


class EasyCache(StepCache):
    name = "easycache"

    def __init__(self, threshold: float = 0.025, start_step: int = 0, end_step: int | None = None,
                 storage="main", warmup: float = 0.1):
        if not 0.0 <= warmup <= 1.0:
            raise InvalidInputError(f"easycache warmup: a fraction of the steps in 0..1, got {warmup}.")
        self.warmup = float(warmup)
        super().__init__(threshold, start_step, end_step, storage)

    def start_run(self, total_steps: int) -> None:
        super().start_run(total_steps)
        self.warmup_steps = int(round(self.warmup * total_steps))
        self.decisions: list[EasyCacheDecision] = []

    def _same_shape(self, st: EasyCacheState, img: torch.Tensor) -> bool:
        return st.computed_input is not None and st.computed_input.shape == img.shape

    def decide(self, img: torch.Tensor, sums=local_sums) -> bool:
        """This branch's decision for a forward whose blocks receive `img`; records it and moves
        the previous input on. True = reuse the cached transformation."""
        st: EasyCacheState = self.state(EasyCacheState)
        predicted, rate, skip = None, st.rate, False
        if not (self.may_skip_now() and self.step >= self.warmup_steps):
            st.accumulated = 0.0
        elif rate is not None and self._same_shape(st, img) and st.previous_input.shape == img.shape:
            change, = sums((img.float() - self.load(st.previous_input, img).float()).abs())
            predicted = rate * change / st.output_sum if st.output_sum > 0 else float("inf")
            st.accumulated += predicted
            skip = st.accumulated < self.threshold
            if not skip:
                st.accumulated = 0.0
        st.previous_input = self.store(img)
        self.decisions.append(EasyCacheDecision(self.step, self.branch, predicted, st.accumulated, rate, skip))
        return skip

    def computed(self, img_in: torch.Tensor, img_out: torch.Tensor, sums=local_sums) -> None:
        """A computed forward: update k from the last computed step and cache in/out."""
        st: EasyCacheState = self.state(EasyCacheState)
        if self._same_shape(st, img_in):
            out_change, in_change, out_sum = sums(
                (img_out.float() - self.load(st.computed_output, img_out).float()).abs(),
                (img_in.float() - self.load(st.computed_input, img_in).float()).abs(), img_out.abs())
            st.rate = out_change / in_change if in_change > 0 else None
        else:
            st.rate = None
            out_sum, = sums(img_out.abs())
        st.output_sum = out_sum
        st.computed_input = st.previous_input if st.previous_input is not None else self.store(img_in)
        st.computed_output = self.store(img_out)

    def run(self, model, e) -> torch.Tensor:
        sums = token_sums(model) or local_sums
        skip = self.decide(e.img, sums)
        self.count(skip)
        st: EasyCacheState = self.state(EasyCacheState)
        if skip:
            delta = self.load(st.computed_output, e.img) - self.load(st.computed_input, e.img)
            return e.img + delta
        img, _ = model.run_blocks(e.img, e.txt, e.ctx)
        self.computed(e.img, img, sums)
        return img
