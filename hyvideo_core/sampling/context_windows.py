"""Context windows for long videos (SPEC_NEXT 4): the DiT sees a few latent frames at a time.

A policy of the one sampling loop, not a second loop. Each step, `WindowedVelocity` runs the
guided velocity (embedded guidance, true CFG, keyframe concat, cache) once per window on
x[:, :, idx] and blends the per-window velocities with per-frame weights:

    v[f] = sum_w weight_w[pos of f in w] * v_w[pos] / sum_w weight_w[pos]

Windows follow ComfyUI's index rules (comfy/context_windows.py; the facts, not its code):
- "static" (ComfyUI standard_static): starts 0, L-O, 2(L-O), ...; the last window is moved back
  to end on the last frame. The same windows every step.
- "uniform" (standard_uniform) and "looped" (looped_uniform): per step k the windows start at
  int(h*s) + round(T*h) and advance by L*s - O, with h = ordered_halving(k) (the bit reversal of k
  over 2**64: 0, 1/2, 1/4, 3/4, ...) and s = 1, 2, 4, ... for min(stride, ceil(log2(T/L)) + 1)
  levels (frames s apart inside a window when s > 1); indices are taken modulo T. "looped" keeps
  windows that wrap past the end; "uniform" moves each wrapping window to end on the last frame
  (adding a window from the wrap point when the next window lacks it) and drops duplicates.
Fuse weights: "pyramid" (FreeNoise's weighted average: 1, 2, .., L/2, .., 2, 1) or "flat" (1).

Lengths are given in PIXEL frames, as the nodes and the CLI take them, and converted to latent
frames as (n - 1) // 4 + 1 (ComfyUI's WAN node's rule; HunyuanVideo's VAE is also 4x in time):
129 -> 33, 32 -> 8.

RoPE: each window's positions are those of a video of the window's length (0 .. L-1), because
the DiT computes them from the shape it is given; ComfyUI and KJ's wrapper do the same.

Caches: window j of every step is a branch of its own for the cache policy ("cond@w0",
"cond@w1", ...), so TeaCache / first-block keep per-window state. With "static" a window covers
the same frames every step; with "uniform"/"looped" the windows move every step, so a cache
compares different frames and mostly computes.

FreeNoise (KJ's HyVideoContextOptions, after AnimateDiff-Evolved): the initial noise is made of
window-wise shuffled repeats. With D = L - O, for s = 0, D, 2D, ... while s + L < T, the frames
[s+L, s+L+D) (cut at T) become a seeded random permutation of the frames [s, s+D) of the
noise built so far, so every frame repeats one of the first window's noise frames.

With T <= L latent frames there is one window: the loop runs exactly as without windows
(bit-identical) and the noise is not shuffled. The memory planner plans for one window
(run/stages.py: run_shape).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from .noise import MAX_FRAMES, MAX_SEED, TIME_STRIDE, check_seed

CONTEXT_SCHEDULES = ("uniform", "looped", "static")
FUSE_METHODS = ("pyramid", "flat")


def latent_frames(pixel_frames: int) -> int:
    """Pixel frames -> latent frames, (n - 1) // 4 + 1 (0 stays 0)."""
    return (pixel_frames - 1) // TIME_STRIDE + 1


@dataclass(frozen=True)
class ContextWindows:
    """Context-window settings; `length` and `overlap` in pixel frames (see the module docstring)."""

    length: int = 129                 # pixel frames a window covers (33 latent frames)
    overlap: int = 32                 # pixel frames shared by neighbouring windows (8 latent frames)
    schedule: str = "static"          # "static" (ComfyUI's default), "uniform" or "looped"
    stride: int = 1                   # levels of the uniform schedules (1 = contiguous windows only)
    freenoise: bool = True            # window-wise shuffled repeats of the initial noise
    fuse: str = "pyramid"             # "pyramid" or "flat"

    # -- validation ---------------------------------------------------------------------
    def check(self) -> "ContextWindows":
        """Every field, naming the parameter as the node / CLI / dataclass spell it."""
        for name, spelled, value, low in (("length", "context_frames (--context-frames)", self.length, 1),
                                          ("overlap", "context_overlap (--context-overlap)", self.overlap, 0),
                                          ("stride", "context_stride", self.stride, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_FRAMES:
                raise InvalidInputError(f"context windows {name} ({spelled}): must be a whole number from {low} "
                                        f"to {MAX_FRAMES}, got {value!r}.")
        if self.overlap >= self.length:
            raise InvalidInputError(
                f"context windows overlap (context_overlap): {self.overlap} pixel frames must be less than the "
                f"window length {self.length}; e.g. a quarter of it.")
        if latent_frames(self.overlap) >= latent_frames(self.length):
            raise InvalidInputError(
                f"context windows overlap (context_overlap): {self.overlap} pixel frames are "
                f"{latent_frames(self.overlap)} latent frames, not less than the window's "
                f"{latent_frames(self.length)} ({self.length} pixel frames); lower the overlap or lengthen the "
                "window.")
        if not isinstance(self.schedule, str) or self.schedule not in CONTEXT_SCHEDULES:
            raise InvalidInputError(f"context windows schedule: {self.schedule!r} is not one of "
                                    f"{list(CONTEXT_SCHEDULES)}.")
        if not isinstance(self.fuse, str) or self.fuse not in FUSE_METHODS:
            raise InvalidInputError(f"context windows fuse: {self.fuse!r} is not one of {list(FUSE_METHODS)}.")
        if not isinstance(self.freenoise, bool):
            raise InvalidInputError(f"context windows freenoise: expected True or False, got {self.freenoise!r}.")
        return self

    # -- latent sizes -------------------------------------------------------------------
    @property
    def latent_length(self) -> int:
        return latent_frames(self.length)

    @property
    def latent_overlap(self) -> int:
        return latent_frames(self.overlap)

    def planned_frames(self, pixel_frames: int) -> int:
        """The pixel frames the DiT sees at once for a video of `pixel_frames` (what to plan memory for)."""
        return min(pixel_frames, self.length)

    def describe(self, frames: int) -> str:
        """One line for a latent of `frames` frames: the windows of the first step, or why none are used."""
        if frames <= self.latent_length:
            return (f"context windows not used: {frames} latent frames fit one window of {self.latent_length} "
                    f"({self.length} pixel frames)")
        count = len(self.indices(frames, 0))
        return (f"context windows: {count} {self.schedule} windows of {self.latent_length} latent frames "
                f"(overlap {self.latent_overlap}, {self.fuse}{', FreeNoise' if self.freenoise else ''}) over "
                f"{frames}")

    # -- the windows of a step ----------------------------------------------------------
    def indices(self, frames: int, step: int) -> list[list[int]]:
        """The latent-frame indices of each window at sampling step `step` of a latent of `frames` frames."""
        length, overlap = self.latent_length, self.latent_overlap
        if frames <= length:
            return [list(range(frames))]
        if self.schedule == "static":
            windows = _static_windows(frames, length, overlap)
        else:
            windows = _uniform_windows(frames, length, overlap, self.stride, step)
            if self.schedule == "uniform":
                windows = _unwrapped(windows, frames, length)
        _check_cover(windows, frames, self)
        return windows

    def weights(self, length: int) -> list[float]:
        """Per-position blend weights of a window of `length` latent frames."""
        return fuse_weights(length, self.fuse)

    # -- FreeNoise ----------------------------------------------------------------------
    def shuffle_noise(self, noise: torch.Tensor, seed: int) -> torch.Tensor:
        """FreeNoise: the noise [B,C,T,h,w] with window-wise shuffled repeats (a new tensor); as is when off
        or when the latent fits one window."""
        if not self.freenoise:
            return noise
        return freenoise_shuffle(noise, self.latent_length, self.latent_overlap, seed)

    def velocity(self, guided, frames: int, hooks=None, total_steps: int = 0) -> "WindowedVelocity":
        return WindowedVelocity(guided, self, frames, hooks, total_steps)


def check_context(context) -> ContextWindows | None:
    """None, or a ContextWindows that passed `check()`; anything else is an InvalidInputError."""
    if context is None:
        return None
    if not isinstance(context, ContextWindows):
        raise InvalidInputError(f"context: expected ContextWindows (or None), got {type(context).__name__}.")
    return context.check()


# -- index rules ----------------------------------------------------------------------------
def ordered_halving(step: int) -> float:
    """`step`'s 64 low bits in reverse order, as a fraction of 2**64: 0, 1/2, 1/4, 3/4, 1/8, ..."""
    reversed_bits = 0
    for bit in range(64):
        if (step >> bit) & 1:
            reversed_bits |= 1 << (63 - bit)
    return reversed_bits / (1 << 64)


def _static_windows(frames: int, length: int, overlap: int) -> list[list[int]]:
    windows = []
    start = 0
    while start + length < frames:
        windows.append(list(range(start, start + length)))
        start += length - overlap
    windows.append(list(range(frames - length, frames)))   # the last one ends on the last frame
    return windows


def _uniform_windows(frames: int, length: int, overlap: int, stride: int, step: int) -> list[list[int]]:
    h = ordered_halving(step)
    levels = min(stride, int(math.ceil(math.log2(frames / length))) + 1)
    pad = int(round(frames * h))           # Python's round (half to even), as ComfyUI
    windows = []
    for level in range(levels):
        spacing = 1 << level
        hop = length * spacing - overlap
        start = int(h * spacing) + pad
        while start < frames + pad - overlap:
            windows.append([f % frames for f in range(start, start + length * spacing, spacing)])
            start += hop
    return windows


def _unwrapped(windows: list[list[int]], frames: int, length: int) -> list[list[int]]:
    """uniform: a window that wraps past the end is moved to end on the last frame; if the next window
    (cyclically) lacks the frame where it wrapped, a window starting there is inserted; repeats go."""
    windows = [list(w) for w in windows]
    repeats = []
    i = 0
    while i < len(windows):
        window = windows[i]
        wrap = next((p for p in range(1, len(window)) if window[p] < window[p - 1]), None)
        if wrap is not None:
            wrapped_at = window[wrap]
            relative = [(f - window[0]) % frames for f in window]
            shift = frames - 1 - relative[-1]
            window[:] = [f + shift for f in relative]
            if wrapped_at not in windows[(i + 1) % len(windows)]:
                windows.insert(i + 1, list(range(wrapped_at, wrapped_at + length)))
        if window in windows[:i]:
            repeats.append(i)
        i += 1
    return [w for j, w in enumerate(windows) if j not in set(repeats)]


def _check_cover(windows: list[list[int]], frames: int, settings: ContextWindows) -> None:
    seen = {f for w in windows for f in w}
    if seen != set(range(frames)):
        raise InvalidInputError(
            f"context windows: the {settings.schedule} schedule (length {settings.length}, overlap "
            f"{settings.overlap}, stride {settings.stride}) does not cover the {frames} latent frames exactly "
            f"(missing {sorted(set(range(frames)) - seen)[:8]}, outside {sorted(seen - set(range(frames)))[:8]}); "
            "use context_stride 1, the static or looped schedule, or another overlap.")


def fuse_weights(length: int, fuse: str = "pyramid") -> list[float]:
    if fuse == "flat":
        return [1.0] * length
    if fuse == "pyramid":
        return [float(min(p + 1, length - p)) for p in range(length)]
    raise InvalidInputError(f"context windows fuse: {fuse!r} is not one of {list(FUSE_METHODS)}.")


# -- FreeNoise ------------------------------------------------------------------------------
def freenoise_shuffle(noise: torch.Tensor, length: int, overlap: int, seed: int) -> torch.Tensor:
    """Window-wise shuffled repeats on dim 2 (latent frames `length`, `overlap`); permutations from a CPU
    generator seeded with `seed`, the same for every sample of the batch."""
    frames = noise.shape[2]
    if frames <= length:
        return noise
    generator = torch.Generator("cpu").manual_seed(check_seed(seed) % (MAX_SEED + 1))
    out = noise.clone()
    hop = length - overlap
    for start in range(0, frames - length, hop):
        place = start + length
        count = min(hop, frames - place)
        source = start + torch.randperm(count, generator=generator)
        out[:, :, place:place + count] = out[:, :, source.to(out.device)]
    return out


# -- the windowed velocity ------------------------------------------------------------------
class WindowedVelocity:
    """GuidedVelocity once per window, blended; the same call signature `(x, timestep, step) -> v`."""

    def __init__(self, guided, settings: ContextWindows, frames: int, hooks=None, total_steps: int = 0):
        self.guided = guided
        self.settings = settings
        self.frames = frames
        self.hooks = hooks
        self.total_steps = total_steps
        self.windows_run = 0
        # Every step's windows now, so a schedule that cannot cover this length fails before the first step.
        self.plan = [settings.indices(frames, k) for k in range(total_steps)]

    @property
    def model(self):
        return self.guided.model

    @property
    def forwards(self) -> int:
        return self.guided.forwards

    def __call__(self, x: torch.Tensor, timestep: float, step: int) -> torch.Tensor:
        same = x.shape[2] == self.frames and step < len(self.plan)
        windows = self.plan[step] if same else self.settings.indices(x.shape[2], step)
        if len(windows) == 1 and windows[0] == list(range(x.shape[2])):
            return self.guided(x, timestep, step)        # fits one window: exactly the plain loop
        total = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        weight_sum = torch.zeros(x.shape[2], dtype=torch.float32, device=x.device)
        v = None
        try:
            for j, frames in enumerate(windows):
                if j and self.hooks is not None:
                    self.hooks.check_cancelled(step, self.total_steps)
                idx = torch.tensor(frames, dtype=torch.long, device=x.device)
                weights = torch.tensor(self.settings.weights(len(frames)), dtype=torch.float32, device=x.device)
                v = self._window(x, idx, timestep, step, j)
                total.index_add_(2, idx, v.float() * weights.view(1, 1, -1, 1, 1))
                weight_sum.index_add_(0, idx, weights)
                self.windows_run += 1
            dtype = v.dtype
            v = None
            return (total / weight_sum.view(1, 1, -1, 1, 1)).to(dtype)
        except BaseException:
            total = weight_sum = v = None
            raise

    def _window(self, x, idx, timestep, step, j):
        return self.guided(x[:, :, idx], timestep, step, frames=idx, branch_suffix=f"@w{j}")
