"""MagCache for HunyuanVideo (SPEC_NEXT 5.2): skip the blocks while the calibrated magnitude
ratio of their residual says the skipped steps' residuals stay close to the cached one.

The residual r_t = image tokens after the last block - image tokens entering the first block
(e.img), exactly the official script's quantity. Offline calibration gives, per step,
mag_ratio_t = mean over tokens of |r_t| / |r_{t-1}| (token-wise L2 norm); HunyuanVideo ships
tables for 50 steps at 720p and 544p. For another step count the table is resampled by nearest
index: ratio_i = table[round(i * (L - 1) / (n - 1))] (numpy rounding, as the reference).

Per forward of a branch, on steps >= int(retention * steps):
    R <- R * ratio[step]; err += |1 - R|; n += 1
    skip (img = e.img + cached r) if err <= threshold and n <= max_skips,
    otherwise compute (r is cached) and reset R = 1, err = 0, n = 0.
Steps before that, the first and last step, steps outside [start_step, end_step), and
threshold 0 always compute (the official script may skip the last step; its tables make it
compute there at the published settings anyway). The final layer always runs.
Published defaults: threshold 0.24, max_skips (K) 6, retention 0.2 (the gentler 0.12 / 4 / 0.2
is the script's alternative).

The decisions depend on the step and the table only, never on the run's tensors, so every
parallel rank takes the same decision without a collective. `ratios="auto"` picks the table
whose calibrated height is nearest the video's shorter side (one rule for every rank: the
token grid is the whole video's). `calibrate=True` never skips and records the measured ratios
per branch (`calibrated`), reduced over every rank's real tokens (token_sums), to feed back as
`ratios=`. Each branch ("cond", "uncond", "cond+uncond") keeps its own state; all of it resets in
start_run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ...errors import InvalidInputError
from .policy import StepCache, token_sums

# MagCache @df81cb1, MagCache4HunyuanVideo: calibrated on 50 steps; element 0 is 1.0.
HUNYUAN_MAG_RATIOS_720P = (
    1.0, 1.0754, 1.27807, 1.11596, 1.09504, 1.05188, 1.00844, 1.05779, 1.00657, 1.04142, 1.03101, 1.00679,
    1.02556, 1.00908, 1.06949, 1.05438, 1.02214, 1.02321, 1.03019, 1.00779, 1.03381, 1.01886, 1.01161, 1.02968,
    1.00544, 1.02822, 1.00689, 1.02119, 1.0105, 1.01044, 1.01572, 1.02972, 1.0094, 1.02368, 1.0226, 0.98965,
    1.01588, 1.02146, 1.0018, 1.01687, 0.99436, 1.00283, 1.01139, 0.97122, 0.98251, 0.94513, 0.97656, 0.90943,
    0.85703, 0.75456)
HUNYUAN_MAG_RATIOS_544P = (
    1.0, 1.06971, 1.29073, 1.11245, 1.09596, 1.05233, 1.01415, 1.05672, 1.00848, 1.03632, 1.02974, 1.00984,
    1.03028, 1.00681, 1.06614, 1.05022, 1.02592, 1.01776, 1.02985, 1.00726, 1.03727, 1.01502, 1.00992, 1.03371,
    0.9976, 1.02742, 1.0093, 1.01869, 1.00815, 1.01461, 1.01152, 1.03082, 1.0061, 1.02162, 1.01999, 0.99063,
    1.01186, 1.0217, 0.99947, 1.01711, 0.9904, 1.00258, 1.00878, 0.97039, 0.97686, 0.94315, 0.97728, 0.91154,
    0.86139, 0.76592)
HUNYUAN_MAG_RATIOS = {"720p": HUNYUAN_MAG_RATIOS_720P, "544p": HUNYUAN_MAG_RATIOS_544P}
RATIO_CHOICES = ("auto", *HUNYUAN_MAG_RATIOS)
_CALIBRATED_HEIGHT = {"720p": 720, "544p": 544}
_LATENT_SPATIAL = 8   # VAE pixels per latent pixel


def resample_ratios(ratios: Sequence[float], steps: int) -> tuple[float, ...]:
    """Nearest-index resampling of a calibrated table to `steps` entries."""
    table = np.asarray(ratios, dtype=np.float64)
    if steps == len(table):
        return tuple(float(r) for r in table)
    if steps == 1:
        return (float(table[-1]),)
    index = np.round(np.arange(steps) * ((len(table) - 1) / (steps - 1))).astype(int)
    return tuple(float(r) for r in table[index])


def table_for_height(pixels: int) -> str:
    """The calibrated table whose height is nearest `pixels` (ties go to the larger)."""
    return min(_CALIBRATED_HEIGHT, key=lambda k: (abs(_CALIBRATED_HEIGHT[k] - pixels), -_CALIBRATED_HEIGHT[k]))


@dataclass
class MagCacheState:
    ratio: float = 1.0                         # R, the accumulated magnitude ratio
    error: float = 0.0                         # err
    skips: int = 0                             # n, steps since the last computed one
    residual: torch.Tensor | None = None       # r at the last computed forward


@dataclass(frozen=True)
class MagCacheDecision:
    step: int
    branch: str
    ratio: float | None    # the table's ratio for this step; None when the step is not a candidate
    accumulated_ratio: float
    error: float           # err before a reset (what was compared with the threshold)
    skipped: bool


class MagCache(StepCache):
    name = "magcache"

    def __init__(self, threshold: float = 0.24, start_step: int = 0, end_step: int | None = None,
                 storage="main", max_skips: int = 6, retention: float = 0.2,
                 ratios: str | Sequence[float] = "auto", calibrate: bool = False):
        if int(max_skips) != max_skips or max_skips < 1:
            raise InvalidInputError(f"magcache max_skips: a whole number of steps >= 1, got {max_skips}.")
        if not 0.0 <= retention <= 1.0:
            raise InvalidInputError(f"magcache retention: a fraction of the steps in 0..1, got {retention}.")
        if isinstance(ratios, str):
            if ratios not in RATIO_CHOICES:
                raise InvalidInputError(f"magcache ratios: {ratios!r} is not one of {list(RATIO_CHOICES)} "
                                        "or a list of calibrated ratios.")
        else:
            ratios = tuple(float(r) for r in ratios)
            if len(ratios) < 2 or not all(np.isfinite(ratios)) or min(ratios) <= 0:
                raise InvalidInputError(f"magcache ratios: need at least 2 positive finite ratios, got {ratios}.")
        self.max_skips = int(max_skips)
        self.retention = float(retention)
        self.ratios = ratios
        self.calibrate = bool(calibrate)
        super().__init__(threshold, start_step, end_step, storage)

    def start_run(self, total_steps: int) -> None:
        super().start_run(total_steps)
        self.retention_steps = int(self.retention * total_steps)
        self.table: str | None = None if isinstance(self.ratios, str) else "custom"
        self.step_ratios: tuple[float, ...] | None = None
        if not isinstance(self.ratios, str):
            self.step_ratios = resample_ratios(self.ratios, max(total_steps, 1))
        elif self.ratios != "auto":
            self.table = self.ratios
            self.step_ratios = resample_ratios(HUNYUAN_MAG_RATIOS[self.ratios], max(total_steps, 1))
        self.decisions: list[MagCacheDecision] = []
        self.calibrated: dict[str, list[float]] = {}

    def choose_table(self, grid: tuple[int, int, int], patch: Sequence[int]) -> None:
        """Resolve "auto" once per run from the token grid (the whole video's on every rank)."""
        if self.step_ratios is None:
            pixels = min(grid[1] * patch[1], grid[2] * patch[2]) * _LATENT_SPATIAL
            self.table = table_for_height(pixels)
            self.step_ratios = resample_ratios(HUNYUAN_MAG_RATIOS[self.table], max(self.total_steps, 1))

    def decide(self, reusable: bool = True) -> bool:
        """This branch's decision at the current step; True = reuse the cached residual.
        `reusable` is False when no cached residual of the right shape exists."""
        st: MagCacheState = self.state(MagCacheState)
        ratio, skip, error = None, False, st.error
        candidate = (not self.calibrate and reusable and self.step >= self.retention_steps and self.may_skip_now())
        if candidate:
            ratio = self.step_ratios[self.step]
            st.ratio *= ratio
            st.error += abs(1.0 - st.ratio)
            st.skips += 1
            error = st.error
            skip = st.error <= self.threshold and st.skips <= self.max_skips
        accumulated = st.ratio
        if not skip:
            st.ratio, st.error, st.skips = 1.0, 0.0, 0
        self.decisions.append(MagCacheDecision(self.step, self.branch, ratio, accumulated, error, skip))
        return skip

    def run(self, model, e) -> torch.Tensor:
        self.choose_table(e.grid, model.config.patch_size)
        st: MagCacheState = self.state(MagCacheState)
        skip = self.decide(st.residual is not None and st.residual.shape == e.img.shape)
        self.count(skip)
        if skip:
            return e.img + self.load(st.residual, e.img)
        img, _ = model.run_blocks(e.img, e.txt, e.ctx)
        residual = img - e.img
        if self.calibrate:
            self._measure(residual, st.residual, token_sums(model))
        st.residual = self.store(residual)
        return img

    def _measure(self, residual: torch.Tensor, previous: torch.Tensor | None, sums) -> None:
        """Calibration: mean over real tokens of |r_t| / |r_{t-1}| (token-wise L2), per branch."""
        found = self.calibrated.setdefault(self.branch, [])
        if previous is None or previous.shape != residual.shape:
            found.append(1.0)
        else:
            per_token = residual.float().norm(dim=-1) / self.load(previous, residual).float().norm(dim=-1)
            if sums is None:
                found.append(float(per_token.mean()))
            else:
                total, count = sums(per_token, torch.ones_like(per_token))
                found.append(total / count)
