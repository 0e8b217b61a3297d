"""Tiled decode and encode: overlapping tiles in space and time, linearly blended.

Geometry follows the reference (SPEC 3.3): tiles start every `stride` latents (a last tile may
be short), a temporal tile after the first drops its first output frame (its causal "image"
frame), the overlap is blended with the ramp b[y] = a[-E+y](1-y/E) + b[y](y/E) against the
previous tile *after* that tile's own blending, and every tile keeps `stride` outputs (the
first temporal tile one more). The blend extent and kept length are derived from the tile
geometry, not from sample-space sizes, so seams line up for any tile size and overlap; with
the reference's default and golden settings the two coincide and results are identical.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import InvalidInputError
from .config import VAEConfig

log = logging.getLogger(__name__)

MIN_SPATIAL_TILE = 32   # pixels (4 latent pixels)
MIN_TEMPORAL_TILE = 4   # frames (each tile then spans 2 latent frames)


@dataclass(frozen=True)
class TileSpec:
    """Tile sizes in output (pixel / frame) units. None disables tiling along that axis.

    spatial / spatial_overlap: tile edge and overlap in pixels (multiples of 8).
    temporal / temporal_overlap: frames per tile (plus the causal first frame) and overlap in
    frames (multiples of 4). The defaults are the reference's: 256 px / 64 px, 64 / 16 frames.
    """

    spatial: int | None = 256
    spatial_overlap: int = 64
    temporal: int | None = 64
    temporal_overlap: int = 16

    def __post_init__(self) -> None:
        _check_axis("spatial", self.spatial, self.spatial_overlap, MIN_SPATIAL_TILE, "pixels")
        _check_axis("temporal", self.temporal, self.temporal_overlap, MIN_TEMPORAL_TILE, "frames")

    def describe(self) -> str:
        space = "untiled" if self.spatial is None else f"{self.spatial}px/{self.spatial_overlap}px overlap"
        time = "untiled" if self.temporal is None else f"{self.temporal}f/{self.temporal_overlap}f overlap"
        return f"space {space}, time {time}"


def _check_axis(name: str, size, overlap, minimum: int, unit: str) -> None:
    if size is None:
        return
    if not isinstance(size, int) or not isinstance(overlap, int):
        raise InvalidInputError(f"VAE tiles: {name}={size!r}, {name}_overlap={overlap!r} must be integers.")
    if size < minimum:
        raise InvalidInputError(
            f"VAE tiles: {name} tile {size} {unit} is below the minimum of {minimum} {unit}; use "
            f"{minimum} or more (or disable {name} tiling).")
    if not 0 <= overlap < size:
        raise InvalidInputError(
            f"VAE tiles: {name}_overlap={overlap} {unit} must be >= 0 and smaller than the "
            f"{name} tile ({size} {unit}).")


def snap_tiles(tiles: TileSpec, config: VAEConfig) -> TileSpec:
    """Round sizes down to whole latent units (8 px, 4 frames), saying so when that changes them."""
    s, t = config.spatial_compression, config.temporal_compression
    snap = lambda v, unit: None if v is None else v // unit * unit  # noqa: E731
    overlap_s = min(snap(tiles.spatial_overlap, s), snap(tiles.spatial, s) - s) if tiles.spatial else 0
    overlap_t = min(snap(tiles.temporal_overlap, t), snap(tiles.temporal, t) - t) if tiles.temporal else 0
    snapped = TileSpec(snap(tiles.spatial, s), max(overlap_s, 0), snap(tiles.temporal, t), max(overlap_t, 0))
    if snapped != tiles:
        log.warning("VAE tiles %s snapped to whole latent units (%d px, %d frames): %s",
                    tiles.describe(), s, t, snapped.describe())
    return snapped


@dataclass(frozen=True)
class AxisTiling:
    """One axis of a tile plan: input tile length and stride, output blend extent and stride."""

    tile_in: int
    stride_in: int
    blend_out: int
    keep_out: int


def decode_axes(tiles: TileSpec, config: VAEConfig) -> tuple[AxisTiling | None, AxisTiling | None]:
    s, t = config.spatial_compression, config.temporal_compression
    spatial = temporal = None
    if tiles.spatial is not None:
        stride = (tiles.spatial - tiles.spatial_overlap) // s
        spatial = AxisTiling(tiles.spatial // s, stride, tiles.spatial_overlap, stride * s)
    if tiles.temporal is not None:
        stride = (tiles.temporal - tiles.temporal_overlap) // t
        temporal = AxisTiling(tiles.temporal // t + 1, stride, tiles.temporal_overlap, stride * t)
    return spatial, temporal


def encode_axes(tiles: TileSpec, config: VAEConfig) -> tuple[AxisTiling | None, AxisTiling | None]:
    s, t = config.spatial_compression, config.temporal_compression
    spatial = temporal = None
    if tiles.spatial is not None:
        stride = tiles.spatial - tiles.spatial_overlap
        spatial = AxisTiling(tiles.spatial, stride, tiles.spatial_overlap // s, stride // s)
    if tiles.temporal is not None:
        stride = tiles.temporal - tiles.temporal_overlap
        temporal = AxisTiling(tiles.temporal + 1, stride, tiles.temporal_overlap // t, stride // t)
    return spatial, temporal


Runner = Callable[[torch.Tensor], torch.Tensor]


def tiled_decode(z: torch.Tensor, decode: Runner, tiles: TileSpec, config: VAEConfig,
                 out_device: torch.device | str | None = None) -> torch.Tensor:
    """Decode latents [B, C, T, H, W] tile by tile; `decode` maps a latent tile to video. The
    result is assembled on `out_device` (default: where the tiles are computed)."""
    spatial, temporal = decode_axes(tiles, config)
    s = config.spatial_compression

    def by_space(chunk: torch.Tensor, device=None) -> torch.Tensor:
        h, w = chunk.shape[-2:]
        if spatial is None or (h <= spatial.tile_in and w <= spatial.tile_in):
            return decode(chunk)
        return tile_space(chunk, decode, spatial, (h * s, w * s), device)

    frames = z.shape[2]
    if temporal is None or frames <= temporal.tile_in - 1:
        return by_space(z, out_device)
    return tile_time(z, by_space, temporal, config.sample_frames(frames), out_device)


def decode_tile_inputs(z: torch.Tensor, tiles: TileSpec, config: VAEConfig) -> list[torch.Tensor]:
    """The latent tiles `tiled_decode(z, decode, tiles, config)` hands to `decode`, in call order
    (views of z). Found by a dry run of tiled_decode itself whose `decode` records its input and
    returns an empty meta tensor of the decoded shape, so the list cannot drift from the real
    traversal (the first meta operation of a process imports torch's meta kernels: about 1 s, once).
    A caller that decodes these tiles elsewhere (e.g. spread over several processes) then runs
    tiled_decode with a `decode` that returns them in this order: the blend is the same."""
    inputs: list[torch.Tensor] = []

    def record(chunk: torch.Tensor) -> torch.Tensor:
        inputs.append(chunk)
        return torch.empty(decoded_tile_shape(chunk.shape, config), dtype=chunk.dtype, device="meta")

    tiled_decode(z, record, tiles, config, out_device="meta")
    return inputs


def decoded_tile_shape(latent_shape, config: VAEConfig) -> tuple[int, ...]:
    """[B, out_channels, frames, H, W] the decoder makes of a latent [B, C, T, h, w]."""
    t, h, w = latent_shape[-3:]
    s = config.spatial_compression
    return (latent_shape[0], config.out_channels, config.sample_frames(t), h * s, w * s)


def decode_tile_count(latent_shape, tiles: TileSpec | None, config: VAEConfig) -> int:
    """How many decoder calls one sample takes with these tiles (for progress reports)."""
    if tiles is None:
        return 1
    spatial, temporal = decode_axes(tiles, config)
    frames, height, width = latent_shape[-3:]
    in_time = 1 if temporal is None or frames <= temporal.tile_in - 1 else len(range(0, frames, temporal.stride_in))
    if spatial is None or (height <= spatial.tile_in and width <= spatial.tile_in):
        return in_time
    return in_time * len(range(0, height, spatial.stride_in)) * len(range(0, width, spatial.stride_in))


def tiled_encode(x: torch.Tensor, encode: Runner, tiles: TileSpec, config: VAEConfig) -> torch.Tensor:
    """Encode video [B, 3, F, H, W] tile by tile; `encode` maps a video tile to moments."""
    spatial, temporal = encode_axes(tiles, config)
    s = config.spatial_compression

    def by_space(chunk: torch.Tensor) -> torch.Tensor:
        h, w = chunk.shape[-2:]
        if spatial is None or (h <= spatial.tile_in and w <= spatial.tile_in):
            return encode(chunk)
        return tile_space(chunk, encode, spatial, (h // s, w // s))

    frames = x.shape[2]
    if temporal is None or frames <= temporal.tile_in - 1:
        return by_space(x)
    return tile_time(x, by_space, temporal, config.latent_frames(frames))


def tile_space(x: torch.Tensor, run: Runner, axis: AxisTiling, out_hw: tuple[int, int],
               out_device: torch.device | str | None = None) -> torch.Tensor:
    """Raster-order tiles over H and W. Only the blended edge strips of the previous row and of
    the left neighbour are kept, and kept regions go straight into the preallocated output."""
    height, width = x.shape[-2:]
    out = None
    above: dict[int, torch.Tensor] = {}
    out_y = 0
    for i, y in enumerate(range(0, height, axis.stride_in)):
        left = None
        below: dict[int, torch.Tensor] = {}
        out_x = kept_h = 0
        for j, x0 in enumerate(range(0, width, axis.stride_in)):
            tile = run(x[..., y:y + axis.tile_in, x0:x0 + axis.tile_in])
            if i > 0 and axis.blend_out:
                blend(above[j], tile, axis.blend_out, dim=-2)
            if j > 0 and axis.blend_out:
                blend(left, tile, axis.blend_out, dim=-1)
            if out is None:
                out = tile.new_empty(tile.shape[:-2] + out_hw, device=out_device or tile.device)
            kept = tile[..., :axis.keep_out, :axis.keep_out]
            kept_h = kept.shape[-2]
            out[..., out_y:out_y + kept_h, out_x:out_x + kept.shape[-1]] = kept
            out_x += kept.shape[-1]
            if axis.blend_out > 0:
                below[j] = tile[..., -axis.blend_out:, :].clone()
                left = tile[..., :, -axis.blend_out:].clone()
            del tile, kept
        above = below
        out_y += kept_h
    _check_filled(out, out_y, out_x, out_hw)
    return out


def tile_time(x: torch.Tensor, run: Runner, axis: AxisTiling, out_frames: int,
              out_device: torch.device | str | None = None) -> torch.Tensor:
    """Tiles over frames; a tile after the first drops its first output frame (causal start)."""
    out = None
    tail = None
    written = 0
    for k, t0 in enumerate(range(0, x.shape[2], axis.stride_in)):
        tile = run(x[:, :, t0:t0 + axis.tile_in])
        if k > 0:
            tile = tile[:, :, 1:]
            if axis.blend_out:
                blend(tail, tile, axis.blend_out, dim=2)
        if out is None:
            out = tile.new_empty(tile.shape[:2] + (out_frames,) + tile.shape[3:], device=out_device or tile.device)
        kept = tile[:, :, :axis.keep_out + (1 if k == 0 else 0)]
        out[:, :, written:written + kept.shape[2]] = kept
        written += kept.shape[2]
        if axis.blend_out > 0:
            tail = tile[:, :, -axis.blend_out:].clone()
        del tile, kept
    if written != out_frames:
        raise AssertionError(f"temporal tiling wrote {written} of {out_frames} frames")
    return out


def blend(previous: torch.Tensor, tile: torch.Tensor, extent: int, dim: int) -> None:
    """tile[:n] = previous[-n:] * (1 - y/n) + tile[:n] * (y/n) along `dim`, in place."""
    n = min(previous.shape[dim], tile.shape[dim], extent)
    if n <= 0:
        return
    ramp = torch.arange(n, dtype=torch.float64) / n
    shape = [1] * tile.dim()
    shape[dim] = n
    weight_new = ramp.to(tile.device, tile.dtype).view(shape)
    weight_old = (1 - ramp).to(tile.device, tile.dtype).view(shape)
    head = tile.narrow(dim, 0, n)
    head.mul_(weight_new).add_(previous.narrow(dim, previous.shape[dim] - n, n) * weight_old)


def _check_filled(out, rows: int, cols: int, out_hw: tuple[int, int]) -> None:
    if out is None or (rows, cols) != out_hw:
        raise AssertionError(f"spatial tiling covered {rows}x{cols} of {out_hw[0]}x{out_hw[1]}")
