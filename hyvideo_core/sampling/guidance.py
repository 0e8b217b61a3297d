"""Velocity prediction with embedded guidance and optional true CFG (SPEC 5.3).

- Embedded guidance: the scale x 1000 goes to the model's guidance embedder; one forward a step.
- True CFG (cfg_scale > 1): v = v_u + s*(v_c - v_u) with the negative prompt, either in one
  forward over the batch [neg, pos] (the reference's order) or in two forwards ("sequential"),
  which halves the activation peak. The same embedded guidance goes to both halves.
- CFG parallel: a `cfg_split` policy (hyvideo_core.parallel.CFGSplit; by default the one the
  model's installed parallel policy carries, `model.parallel.cfg_split`) runs one half on each
  rank of its CFG group and combines the all-gathered velocities; cfg_mode does not apply then.
- CFG-Zero* (SPEC_NEXT 6.1), both off by default:
  - `cfg_zero_star` (true CFG only): per sample, alpha = <v_c, v_u> / (||v_u||^2 + 1e-8) over the
    flattened velocities, and v = alpha*v_u + s*(v_c - alpha*v_u) (alpha = 1 is plain CFG); CFG
    parallel combines with the same rule (`combine_cfg`).
  - `zero_init_steps` (with or without true CFG): the first N steps of the schedule return a zero
    velocity without calling the model (diffusers' count: N = 1 zeroes step 0; the CFG-Zero*
    HunyuanVideo demo zeroes 2 of 50 steps). A run that starts later (denoise < 1, start_step)
    zeroes only the steps of its window below N.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError, finite_number
from .text_inputs import PromptTensors, join_batches

log = logging.getLogger(__name__)

CFG_MODES = ("batched", "sequential")


@dataclass(frozen=True)
class GuidanceSettings:
    embedded: float = 6.0        # official default; the model gets embedded*1000
    cfg_scale: float = 1.0       # 1 = off
    cfg_mode: str = "batched"
    cfg_zero_star: bool = False  # CFG-Zero*'s optimised scale (true CFG only)
    zero_init_steps: int = 0     # the first N schedule steps give v = 0 (no forward)

    @property
    def true_cfg(self) -> bool:
        return self.cfg_scale > 1.0

    def check(self) -> None:
        embedded = finite_number("embedded_guidance", self.embedded, "The official default is 6.0.")
        if not embedded >= 0:
            raise InvalidInputError(f"embedded_guidance: must be >= 0 (official default 6.0), got {self.embedded}.")
        cfg_scale = finite_number("cfg_scale", self.cfg_scale, "1 turns true CFG off.")
        if not cfg_scale >= 1.0:
            raise InvalidInputError(f"cfg_scale: must be >= 1 (1 turns true CFG off), got {self.cfg_scale}.")
        if not isinstance(self.cfg_mode, str) or self.cfg_mode not in CFG_MODES:
            raise InvalidInputError(f"cfg_mode: must be one of {CFG_MODES}, got {self.cfg_mode!r}.")
        if not isinstance(self.cfg_zero_star, bool):
            raise InvalidInputError(f"cfg_zero_star: must be True or False, got {self.cfg_zero_star!r}.")
        if isinstance(self.zero_init_steps, bool) or not isinstance(self.zero_init_steps, int) or \
                self.zero_init_steps < 0:
            raise InvalidInputError(
                f"zero_init_steps: must be an integer >= 0 (0 = off; CFG-Zero*'s HunyuanVideo demo zeroes 2 of 50 "
                f"steps), got {self.zero_init_steps!r}.")

    def combine(self, v_u: torch.Tensor, v_c: torch.Tensor, scale: float) -> torch.Tensor:
        """The guided velocity from the uncond and cond halves (plain CFG or CFG-Zero*)."""
        return combine_cfg(v_u, v_c, scale, self.cfg_zero_star)


def zero_star_scale(v_c: torch.Tensor, v_u: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CFG-Zero*'s alpha = <v_c, v_u> / (||v_u||^2 + eps) per sample, [B, 1, ...] in float32."""
    c, u = v_c.flatten(1).float(), v_u.flatten(1).float()
    alpha = (c * u).sum(1) / ((u * u).sum(1) + eps)
    return alpha.view(-1, *(1,) * (v_c.ndim - 1))


def combine_cfg(v_u: torch.Tensor, v_c: torch.Tensor, scale: float, zero_star: bool = False) -> torch.Tensor:
    """v_u + s*(v_c - v_u); with `zero_star`, v_u is first scaled by CFG-Zero*'s alpha."""
    if zero_star:
        v_u = v_u * zero_star_scale(v_c, v_u).to(v_u.dtype)
    return v_u + (v_c - v_u) * scale


class GuidedVelocity:
    """Calls the model for one step's velocity; counts forwards and names the branch to the cache."""

    def __init__(self, model, settings: GuidanceSettings, positive: PromptTensors,
                 negative: PromptTensors | None, concat: torch.Tensor | None = None, cfg_split=None,
                 first_step: int = 0):
        self.model = model
        self.zero_steps = max(0, settings.zero_init_steps - first_step)   # loop steps below zero_init_steps
        self.settings = settings
        self.positive = positive
        self.negative = negative
        self.concat = concat          # keyframe conditioning latent, concatenated on channels
        self.forwards = 0
        self.guidance = settings.embedded * 1000.0 if model.config.guidance_embed else None
        self.joint = None
        split = cfg_split if cfg_split is not None else getattr(getattr(model, "parallel", None), "cfg_split", None)
        if split is not None and not settings.true_cfg:
            log.warning("CFG parallel: cfg_scale=%g turns true CFG off, so both CFG ranks compute the same "
                        "conditional forward; set cfg_scale > 1 or run without cfg_parallel.", settings.cfg_scale)
            split = None
        self.split = split
        if split is None and settings.true_cfg and settings.cfg_mode == "batched":
            self.joint = join_batches(negative, positive)
            self.concat = None if concat is None else torch.cat([concat, concat])

    def __call__(self, x: torch.Tensor, timestep: float, step: int, frames: torch.Tensor | None = None,
                 branch_suffix: str = "") -> torch.Tensor:
        """The guided velocity at x. Context windows (context_windows.py) pass the latent `frames` x
        holds (the concat conditioning is sliced to them) and a `branch_suffix` ("@w{j}") so that each
        window keeps its own cache state."""
        s = self.settings
        if step < self.zero_steps:
            return torch.zeros_like(x)          # CFG-Zero*'s zero-init: no forward
        concat = self.concat if frames is None or self.concat is None else self.concat[:, :, frames]

        def forward(inputs, prompt: PromptTensors, branch: str) -> torch.Tensor:
            return self._forward(inputs, timestep, prompt, step, branch + branch_suffix, concat)

        if not s.true_cfg:
            return forward(x, self.positive, "cond")
        if self.split is not None:
            v = forward(x, self.split.prompt(self.positive, self.negative), "cond+uncond")
            if s.cfg_zero_star:
                return self.split.combine(v, s.cfg_scale, rule=s.combine)
            return self.split.combine(v, s.cfg_scale)
        if self.joint is not None:
            v_u, v_c = forward(torch.cat([x, x]), self.joint, "cond+uncond").chunk(2)
        else:
            v_u = forward(x, self.negative, "uncond")
            v_c = forward(x, self.positive, "cond")
        return s.combine(v_u, v_c, s.cfg_scale)

    def _forward(self, x, timestep, prompt: PromptTensors, step: int, branch: str, concat) -> torch.Tensor:
        if self.model.cache is not None:
            self.model.cache.begin_step(step, branch)
        if concat is not None:
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        self.forwards += 1
        return self.model(x, timestep, prompt.text_states, prompt.text_mask, prompt.pooled, self.guidance)
