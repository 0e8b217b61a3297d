"""Section 3: the real-config 3D VAE (884-16c-hy, random weights) decoding on the GPU.

- Tiled decode of a 1280x720x129 latent with the planner's default tiles (256 px / 64 frames,
  quarter overlaps), video assembled in host RAM as the nodes do: peak device memory measured
  vs the planner's decode phase for the same settings (VAE weights + largest tile + the video
  the device holds; vae/memory.py, the figures the tile chooser also uses), and the time. The
  decode is time-boxed through its `progress` hook: past the box it stops and the time is
  extrapolated from the tiles done (reported as such; the peak is reached within the first
  temporal chunk's tiles, which the box is sized to cover).
- Untiled vs tiled at a smaller size: time ratio and both peaks against their predictions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gpu_check_common import MemoryComparison, PeakMemory, Settings, Size, compare_memory, release, sync
from hyvideo_core.runtime.planner import PlanInputs, plan
from hyvideo_core.vae import PRESETS, HunyuanVideoVAE
from hyvideo_core.vae.tile_choice import tiles_of


class _TimeBoxReached(Exception):
    pass


@dataclass
class DecodeRun:
    size: str
    tiles: str
    seconds: float
    complete: bool
    tiles_done: int
    tiles_total: int
    seconds_extrapolated: float     # = seconds when complete
    memory: MemoryComparison | None = None


def vae_dtype(device: torch.device) -> torch.dtype:
    """float16 on a GPU (the planner's default VAE dtype); float32 in the CPU dry run."""
    return torch.float16 if device.type == "cuda" else torch.float32


def build_vae(name: str, device: torch.device) -> HunyuanVideoVAE:
    """The whole VAE (encoder too: the planner prices the file's weights, which visit the device)."""
    torch.manual_seed(0)
    with torch.device(device):
        vae = HunyuanVideoVAE(PRESETS[name], with_encoder=True)
    return vae.to(vae_dtype(device)).eval().requires_grad_(False)


def predicted_decode(vae, size: Size, tiles: tuple[int, int] | None) -> int:
    """The planner's decode phase for this decode alone (the DiT unloaded)."""
    px, frames = tiles if tiles is not None else (None, None)
    inputs = PlanInputs(width=size.width, height=size.height, frames=size.frames, vae_tile_px=px,
                        vae_tile_frames=frames, vae_dtype=vae.dtype, vae_config=vae.config,
                        unload_dit_for_decode=True)
    return plan(inputs).decode_peak


def decode(vae, size: Size, tiles: tuple[int, int] | None, device, time_box_s: float | None = None) -> DecodeRun:
    g = torch.Generator(device).manual_seed(3)
    t, h, w = size.latent
    latent = torch.randn(1, vae.config.latent_channels, t, h, w, generator=g, device=device, dtype=vae.dtype)
    spec = None if tiles is None else tiles_of(*tiles)
    state = {"done": 0, "total": 1}
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        state.update(done=done, total=total)
        if time_box_s is not None and time.perf_counter() - start > time_box_s and done < total:
            raise _TimeBoxReached()

    complete = True
    with PeakMemory(device) as peak:
        start = time.perf_counter()
        try:
            video = vae.decode(latent, spec, output_device="cpu", progress=progress, retry_on_oom=False)
            del video
        except _TimeBoxReached:
            complete = False
        sync(device)
        seconds = time.perf_counter() - start
    done, total = state["done"], state["total"]
    predicted = predicted_decode(vae, size, tiles)
    label = "untiled" if spec is None else spec.describe()
    return DecodeRun(size.label, label, seconds, complete, done, total,
                     seconds if complete else seconds * total / max(1, done),
                     compare_memory(f"VAE decode {size.label} {label}", peak.peak, predicted, peak.method))


def run_vae_section(settings: Settings, device: torch.device, guard, result) -> None:
    vae = build_vae(settings.vae_config, device)
    result.data["config"] = settings.vae_config
    result.data["dtype"] = str(vae.dtype)
    # warm-up (kernel selection, allocator) on a latent of a few frames, not timed
    decode(vae, Size(64, 64, 5), None, device)
    release(device)
    box = max(5.0, min(settings.vae_time_box_s, guard.left() - 30.0))
    tiled = decode(vae, settings.vae_tiled_size, settings.vae_tiles, device, time_box_s=box)
    result.data["tiled_large"] = tiled
    if not tiled.complete:
        result.notes.append(f"tiled {settings.vae_tiled_size.label} decode stopped after {box:.0f} s at tile "
                            f"{tiled.tiles_done}/{tiled.tiles_total}; its time is extrapolated from those tiles")
    release(device)
    small_untiled = decode(vae, settings.vae_small_size, None, device)
    release(device)
    small_tiled = decode(vae, settings.vae_small_size, settings.vae_tiles, device)
    result.data["small_untiled"] = small_untiled
    result.data["small_tiled"] = small_tiled
    result.data["small_tiled_over_untiled_time"] = small_tiled.seconds / small_untiled.seconds
