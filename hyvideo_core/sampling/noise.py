"""Latent shape from a video size, and device-independent seeded noise (SPEC 5.4)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..errors import InvalidInputError
from .latent_format import LATENT_CHANNELS

log = logging.getLogger(__name__)

SIZE_MULTIPLE = 16   # latent h, w = size/8 must be even for the 2x2 patch
TIME_STRIDE = 4      # causal VAE: frames 4k+1 <-> latent frames k+1
SPACE_STRIDE = 8
# Hard limits of a request, the same as the nodes' widget limits (run/validate.py re-exports them):
# the library refuses what no widget could ask for before anything is allocated.
MAX_SIZE = 4096
MAX_FRAMES = 1025
MAX_BATCH = 4096   # ComfyUI's empty-latent batch widget limit
# Seeds are unsigned 64-bit, ComfyUI's seed widget range (0 .. 0xffffffffffffffff).
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class LatentPlan:
    """The video size actually generated and how it differs from the one asked for."""

    width: int
    height: int
    frames: int
    batch: int
    adjustments: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.batch, LATENT_CHANNELS, (self.frames - 1) // TIME_STRIDE + 1,
                self.height // SPACE_STRIDE, self.width // SPACE_STRIDE)

    @property
    def tokens(self) -> int:
        _, _, t, h, w = self.shape
        return t * (h // 2) * (w // 2)


def plan_latent(width: int, height: int, frames: int, batch: int = 1) -> LatentPlan:
    """Sizes round up to multiples of 16 (as the official script), frames down to 4k+1 (as ComfyUI's
    Empty Hunyuan Latent Video); every change is logged and kept in `adjustments`."""
    for name, value, limit in (("width", width, MAX_SIZE), ("height", height, MAX_SIZE),
                               ("frames", frames, MAX_FRAMES), ("batch_size", batch, MAX_BATCH)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise InvalidInputError(f"{name}: must be a whole number from 1 to {limit}, got {value!r}.")
    notes = []
    w = -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE
    h = -(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE
    f = (frames - 1) // TIME_STRIDE * TIME_STRIDE + 1
    if (w, h) != (width, height):
        notes.append(f"size {width}x{height} rounded up to {w}x{h} (multiples of {SIZE_MULTIPLE})")
    if f != frames:
        notes.append(f"frames {frames} rounded down to {f} (frames must be 4k+1)")
    for note in notes:
        log.warning("HunyuanVideo latent: %s.", note)
    return LatentPlan(w, h, f, batch, tuple(notes))


def plan_from_latent(shape, batch: int | None = None) -> LatentPlan:
    """The plan that a given latent [B,16,T,h,w] stands for."""
    if len(shape) != 5 or shape[1] != LATENT_CHANNELS:
        raise InvalidInputError(
            f"latent: expected [B, {LATENT_CHANNELS}, T, H, W] (a HunyuanVideo LATENT), got {list(shape)}.")
    b, _, t, h, w = shape
    if h % 2 or w % 2:
        raise InvalidInputError(
            f"latent: height/width {h}x{w} must be even (the DiT's 2x2 patch); the video size must be a "
            f"multiple of {SIZE_MULTIPLE}.")
    return LatentPlan(w * SPACE_STRIDE, h * SPACE_STRIDE, (t - 1) * TIME_STRIDE + 1, batch or b)


def check_seed(seed, parameter: str = "seed") -> int:
    """A seed in ComfyUI's widget range 0..2**64-1, else an InvalidInputError naming the parameter."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"{parameter}: must be a whole number from 0 to 2**64-1 "
                                f"({MAX_SEED}), got {seed!r}.")
    return int(seed)


def seeded_noise(shape, seed: int, device=None) -> torch.Tensor:
    """Standard normal float32 noise; sample i uses a CPU generator seeded seed+i (as the reference
    seeds per sample), so a seed gives the same latents on any device and in any batch.

    Seeds span ComfyUI's widget range 0..2**64-1. ComfyUI hands its seed to `torch.manual_seed`
    as is (comfy/sample.py prepare_noise), which takes any unsigned 64-bit value; we do the same
    with a CPU generator, so a batch of one matches ComfyUI's noise for the same seed. seed+i is
    reduced modulo 2**64 (unsigned 64-bit wrap-around: seed 2**64-1 in a batch of two seeds its
    second sample with 0), so no seed in range can overflow the generator's 64-bit argument."""
    seed = check_seed(seed)
    samples = []
    for i in range(shape[0]):
        generator = torch.Generator("cpu").manual_seed((seed + i) % (MAX_SEED + 1))
        samples.append(torch.randn(tuple(shape[1:]), generator=generator, dtype=torch.float32))
    return torch.stack(samples).to(device)


def noise_to_sigma(clean: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """x_sigma = (1 - sigma)*x0 + sigma*noise (the flow-matching forward process)."""
    return clean.float() * (1.0 - sigma) + noise * sigma
