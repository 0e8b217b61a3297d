"""Choosing tiles: `auto` from a memory budget, and smaller tiles after an out-of-memory error."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..errors import OutOfMemoryError
from ..runtime.devices import is_out_of_memory, release_memory
from ..runtime.placement import same_device
from .memory import decode_memory, decode_tile_shape, encode_tile_shape, estimate_encode_bytes, memory_budget
from .tiling import MIN_SPATIAL_TILE, MIN_TEMPORAL_TILE, TileSpec

log = logging.getLogger(__name__)

SPATIAL_CANDIDATES = (1024, 768, 512, 384, 256, 192, 128, 96, 64, 32)
TEMPORAL_CANDIDATES = (128, 64, 32, 16, 8, 4)
# OOM fallback: spatial tiles are halved down to this first, then temporal ones, then spatial again.
SPATIAL_FALLBACK_FLOOR = 64


@dataclass
class DecodeReport:
    """What a decode did: the tiles that worked (None = one pass) and the attempts that ran out
    of memory before it, as (tiles description, error) pairs."""

    tiles: TileSpec | None
    failed: list[tuple[str, str]] = field(default_factory=list)
    budget_bytes: int | None = None
    estimated_bytes: int | None = None

    def describe(self) -> str:
        used = "one pass (untiled)" if self.tiles is None else self.tiles.describe()
        if not self.failed:
            return f"decoded with {used}"
        tried = "; ".join(desc for desc, _ in self.failed)
        return f"out of memory with [{tried}]; decoded with {used}"


def tiles_of(spatial: int | None, temporal: int | None) -> TileSpec | None:
    """Tiles of these sizes (pixels, frames; None = that axis untiled) with the default overlaps
    (a quarter, the reference's 64 px / 16 frames for 256 px / 64 frames); None when both are None.
    The tile chooser's candidates and the planner's `vae_tile_px` / `vae_tile_frames` both mean this."""
    if spatial is None and temporal is None:
        return None
    s_overlap = 0 if spatial is None else min(max(8, spatial // 4 // 8 * 8), spatial - 8)
    t_overlap = 0 if temporal is None else (min(max(4, temporal // 4 // 4 * 4), temporal - 4))
    return TileSpec(spatial, s_overlap, temporal, t_overlap)


def _candidates(extent_px: int, frames: int):
    """(spatial, temporal) pairs worth trying for a video; None = that axis untiled."""
    spatial = [None] + [s for s in SPATIAL_CANDIDATES if s < extent_px]
    temporal = [None] + [t for t in TEMPORAL_CANDIDATES if t < frames - 1]
    return [(s, t) for s in spatial for t in temporal]


def choose_decode_tiles(vae, latent_shape, budget: int | None = None,
                        output_device=None) -> tuple[TileSpec | None, int, int]:
    """The largest tiles whose estimated working memory (memory.decode_memory: tile + decoded video
    held on the device) fits the budget -> (tiles, budget, estimate). `output_device` is where the
    video is assembled (None: on the VAE's device), as for `decode`."""
    config = vae.config
    budget = memory_budget(vae.device, budget)
    batch, _, t, h, w = latent_shape
    element = torch.empty((), dtype=vae.dtype).element_size()
    on_device = output_device is None or same_device(output_device, vae.device)
    best = None
    for spatial, temporal in _candidates(max(h, w) * config.spatial_compression, config.sample_frames(t)):
        tiles = tiles_of(spatial, temporal)
        need = decode_memory(config, (t, h, w), tiles, element, batch=batch, output_on_device=on_device).need
        volume = math.prod(decode_tile_shape(config, (t, h, w), tiles))
        key = (need <= budget, volume if need <= budget else -need, spatial or 1 << 30)
        if best is None or key > best[0]:
            best = (key, tiles, need)
    (fits, *_), tiles, need = best
    if not fits:
        log.warning("VAE auto tiling: even the smallest tiles need about %.2f GB, above the %.2f GB "
                    "budget; trying them anyway.", need / 2**30, budget / 2**30)
    return tiles, budget, need


def choose_encode_tiles(vae, video_shape, budget: int | None = None) -> TileSpec | None:
    config = vae.config
    budget = memory_budget(vae.device, budget)
    _, _, frames, height, width = video_shape
    element = torch.empty((), dtype=vae.dtype).element_size()
    best = None
    for spatial, temporal in _candidates(max(height, width), frames):
        tiles = tiles_of(spatial, temporal)
        tile = encode_tile_shape(config, (frames, height, width), tiles)
        need = estimate_encode_bytes(config, tile, element)
        key = (need <= budget, math.prod(tile) if need <= budget else -need, spatial or 1 << 30)
        if best is None or key > best[0]:
            best = (key, tiles)
    return best[1]


def smaller_tiles(tiles: TileSpec | None, latent_shape, config) -> TileSpec | None:
    """The next tiles to try after an out-of-memory error, or None when none are left."""
    _, _, t, h, w = latent_shape
    extent = max(h, w) * config.spatial_compression
    frames = config.sample_frames(t)
    if tiles is None and _effective(TileSpec(), extent, frames):
        return TileSpec()
    current = tiles or TileSpec()
    space = min(current.spatial or extent, extent)
    time = min(current.temporal or frames - 1, frames - 1)
    s_ratio = current.spatial_overlap / current.spatial if current.spatial else 0.25
    t_ratio = current.temporal_overlap / current.temporal if current.temporal else 0.25
    if space // 2 >= SPATIAL_FALLBACK_FLOOR:
        return _scaled(space // 2 // 8 * 8, s_ratio, current.temporal, current.temporal_overlap, True)
    if time // 2 >= MIN_TEMPORAL_TILE:
        return _scaled(time // 2 // 4 * 4, t_ratio, current.spatial, current.spatial_overlap, False)
    if space // 2 >= MIN_SPATIAL_TILE:
        return _scaled(space // 2 // 8 * 8, s_ratio, current.temporal, current.temporal_overlap, True)
    return None


def _scaled(size: int, ratio: float, other: int | None, other_overlap: int, spatial: bool) -> TileSpec:
    unit = 8 if spatial else 4
    overlap = min(max(unit if size >= 2 * unit else 0, round(size * ratio / unit) * unit), size - unit)
    if spatial:
        return TileSpec(size, overlap, other, other_overlap)
    return TileSpec(other, other_overlap, size, overlap)


def _effective(tiles: TileSpec, extent_px: int, frames: int) -> bool:
    return (tiles.spatial is not None and extent_px > tiles.spatial) or \
        (tiles.temporal is not None and frames - 1 > tiles.temporal)


def decode_with_fallback(vae, latent: torch.Tensor, tiling, *, retry_on_oom: bool = True,
                         memory_budget: int | None = None, output_device=None, progress=None):
    """Decode with `tiling` (None, TileSpec or "auto"); on out-of-memory retry with smaller tiles.
    Returns (video, DecodeReport)."""
    report = DecodeReport(tiles=None)
    tiles = tiling
    if tiling == "auto":
        tiles, report.budget_bytes, report.estimated_bytes = choose_decode_tiles(vae, latent.shape, memory_budget,
                                                                                 output_device)
    elif tiling is not None and not isinstance(tiling, TileSpec):
        from ..errors import InvalidInputError
        raise InvalidInputError(
            f"VAE decode: tiling={tiling!r}; expected None, 'auto' or a TileSpec.")
    while True:
        try:
            video = vae.decode_once(latent, tiles, output_device=output_device, progress=progress)
        except Exception as exc:  # only out-of-memory errors are retried; the rest propagate
            if not (retry_on_oom and is_out_of_memory(exc)):
                raise
            described = "one pass (untiled)" if tiles is None else tiles.describe()
            report.failed.append((described, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            release_memory(vae.device)
            next_tiles = smaller_tiles(tiles, latent.shape, vae.config)
            if next_tiles is None:
                raise OutOfMemoryError(
                    f"VAE decode ran out of memory with {described}, and no smaller tiles are left "
                    f"(minimum {MIN_SPATIAL_TILE} px, {MIN_TEMPORAL_TILE} frames; tried: "
                    f"{'; '.join(d for d, _ in report.failed)}). Free memory (unload the transformer "
                    "/ text encoder), decode in a lower precision (bf16/fp16), or decode fewer "
                    "frames at a time.", suggestion=report) from exc
            log.warning("VAE decode ran out of memory with %s; retrying with %s.", described,
                        next_tiles.describe())
            tiles = next_tiles
            continue
        report.tiles = tiles
        if report.failed:
            log.warning("VAE decode: %s.", report.describe())
        return video, report
