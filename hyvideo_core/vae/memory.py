"""Memory of a VAE pass: the one model of it, used by the tile chooser (tile_choice.py) and the
memory planner (runtime/planner.py), plus the device's budget.

- `decode_tile_shape` / `encode_tile_shape`: the largest tile a tiled pass runs (tiling.py's
  geometry), for a TileSpec or None (one pass).
- `estimate_decode_bytes` / `estimate_encode_bytes`: the working memory of one tile. The estimate
  walks the network the way layers.py runs it (streamed convs keep the input, the output and a few
  chunk buffers alive; small convs keep input, normalised copy, padded copy and output) and
  returns the largest live set in bytes, times ALLOCATOR_OVERHEAD. The tile's own decoded output
  is part of it; weights are not.
- `decode_output_bytes`: the decoded video the decode device holds besides the tile being run.
- `decode_memory`: the two together for a decode (what the tile chooser fits into the budget and
  the planner's "decode tile activations" + "decoded video on device" terms).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from . import attention, layers
from .config import PRESETS, VAEConfig
from .tiling import TileSpec, decode_axes, encode_axes

# The architecture of the official VAE file (load_vae infers exactly this from its tensors).
DEFAULT_CONFIG = PRESETS["884-16c-hy"]

# Measured peak working memory / live-set estimate for the 884-16c decoder on CPU (fp32, 17
# frames at 256x256 untiled: 1.24; 128x128 tiles: 1.36): conv workspaces, format reorders and
# allocator fragmentation.
ALLOCATOR_OVERHEAD = 1.4


def decode_tile_shape(config: VAEConfig, latent_thw: tuple[int, int, int],
                      tiles: TileSpec | None) -> tuple[int, int, int]:
    """The largest latent tile [t, h, w] a decode of `latent_thw` with `tiles` runs (tiling.py:
    decode_axes gives the tile lengths; a latent no larger than a tile is decoded in one pass)."""
    return latent_thw if tiles is None else _largest_tile(latent_thw, *decode_axes(tiles, config))


def encode_tile_shape(config: VAEConfig, video_fhw: tuple[int, int, int],
                      tiles: TileSpec | None) -> tuple[int, int, int]:
    """The largest video tile [F, H, W] an encode of `video_fhw` with `tiles` runs (encode_axes)."""
    return video_fhw if tiles is None else _largest_tile(video_fhw, *encode_axes(tiles, config))


def _largest_tile(extent: tuple[int, int, int], spatial, temporal) -> tuple[int, int, int]:
    """Each axis's tile length, capped by the extent (an axis without tiles is whole)."""
    t, h, w = extent
    return (t if temporal is None else min(t, temporal.tile_in),
            h if spatial is None else min(h, spatial.tile_in),
            w if spatial is None else min(w, spatial.tile_in))


def decode_output_bytes(config: VAEConfig, latent_thw: tuple[int, int, int], tiles: TileSpec | None,
                        element: int, *, batch: int = 1, on_device: bool = False) -> int:
    """Bytes of decoded video (in the VAE's dtype, `element` bytes a value) held on the decode
    device while a tile runs, besides that tile's own output (which `estimate_decode_bytes` counts).

    Where tiling.py and vae.py put things: samples are decoded one at a time; tiles are assembled
    in the tiles' dtype into a video allocated on the output device. `on_device=False` is
    output_device="cpu" (what the nodes and the pipeline pass): the video is in RAM, and the device
    keeps only the spatially assembled temporal chunk (tile_time's inner tile_space runs on the
    tiles' device), the temporal blend tail and the spatial blend strips. `on_device=True` (no
    output_device) adds the assembled video itself, and for a batch the batch's videos."""
    t, h, w = latent_thw
    s = config.spatial_compression
    frames, height, width = config.sample_frames(t), h * s, w * s
    per_frame = config.out_channels * height * width * element
    spatial, temporal = (None, None) if tiles is None else decode_axes(tiles, config)
    in_time = temporal is not None and t > temporal.tile_in - 1
    in_space = spatial is not None and (h > spatial.tile_in or w > spatial.tile_in)
    video = frames * per_frame
    if not (in_time or in_space):  # one pass: the video is the decoder's output
        return batch * video if on_device and batch > 1 else 0
    held = ((1 if batch == 1 else batch + 1) * video) if on_device else 0
    chunk_frames = config.sample_frames(temporal.tile_in) if in_time else frames
    if in_time:
        held += temporal.blend_out * per_frame                          # blend tail of the last chunk
        if in_space:
            held += chunk_frames * per_frame                            # the chunk being assembled
    if in_space and spatial.blend_out:
        row = sum(min(spatial.tile_in, w - x) for x in range(0, w, spatial.stride_in)) * s
        strip = config.out_channels * chunk_frames * spatial.blend_out * element
        held += strip * (2 * row + min(spatial.tile_in, h) * s)         # two rows of strips + the left one
    return held


@dataclass(frozen=True)
class DecodeMemory:
    """Device working memory of a decode (weights not included)."""

    tile: int    # the largest tile's working memory (estimate_decode_bytes of decode_tile_shape)
    video: int   # decoded video held besides it (decode_output_bytes)

    @property
    def need(self) -> int:
        return self.tile + self.video


def decode_memory(config: VAEConfig, latent_thw: tuple[int, int, int], tiles: TileSpec | None,
                  element: int, *, batch: int = 1, output_on_device: bool = False) -> DecodeMemory:
    """The decode's working memory with these tiles; the same figure for the planner and the tile
    chooser. Samples of a batch are decoded one after the other, so a tile's memory does not grow
    with the batch."""
    tile = estimate_decode_bytes(config, decode_tile_shape(config, latent_thw, tiles), element)
    return DecodeMemory(tile, decode_output_bytes(config, latent_thw, tiles, element, batch=batch,
                                                  on_device=output_on_device))


def _conv_live(volume: int, c_in: int, c_out: int, element: int) -> int:
    """Bytes alive inside one conv call besides tensors the caller keeps."""
    input_bytes = volume * c_in * element
    if input_bytes <= 2 * layers.STREAM_CHUNK_BYTES:
        return 2 * input_bytes + volume * c_out * element  # normalised + padded copies, output
    return volume * c_out * element + 3 * layers.STREAM_CHUNK_BYTES


def _resnet_peak(volume: int, c_in: int, c_out: int, element: int) -> int:
    keep = volume * c_in * element  # the block input, needed for the residual
    first = keep + _conv_live(volume, c_in, c_out, element)
    second = keep + volume * c_out * element + _conv_live(volume, c_out, c_out, element)
    return max(first, second)


def _attention_peak(volume: int, channels: int, element: int) -> int:
    scores = min(volume * volume, attention.SCORE_BLOCK_ELEMENTS) * 4 * 2  # scores (+ mask)
    return 6 * volume * channels * element + scores


def estimate_decode_bytes(config: VAEConfig, latent_thw: tuple[int, int, int], element: int) -> int:
    """Peak working memory of decoding one latent of [T, h, w] frames/pixels (batch 1)."""
    t, h, w = latent_thw
    widths = config.block_out_channels[::-1]
    volume = t * h * w
    peak = _conv_live(volume, config.latent_channels, widths[0], element)
    peak = max(peak, _resnet_peak(volume, widths[0], widths[0], element))
    if config.mid_attention:
        peak = max(peak, _attention_peak(volume, widths[0], element))
    for i, factor in enumerate(config.resample_factors()):
        c_in, c_out = widths[max(i - 1, 0)], widths[i]
        peak = max(peak, _resnet_peak(volume, c_in, c_out, element))
        if factor:
            t = 2 * t - 1 if factor[0] == 2 else t
            h, w = h * factor[1], w * factor[2]
            grown = t * h * w
            peak = max(peak, volume * c_out * element + _conv_live(grown, c_out, c_out, element))
            volume = grown
    return int(ALLOCATOR_OVERHEAD * max(peak, _conv_live(volume, widths[-1], config.out_channels, element)))


def estimate_encode_bytes(config: VAEConfig, video_fhw: tuple[int, int, int], element: int) -> int:
    """Peak working memory of encoding one video of [F, H, W] (batch 1)."""
    t, h, w = video_fhw
    widths = config.block_out_channels
    volume = t * h * w
    peak = _conv_live(volume, config.in_channels, widths[0], element)
    for i, factor in enumerate(config.resample_factors()):
        c_in, c_out = widths[max(i - 1, 0)], widths[i]
        peak = max(peak, _resnet_peak(volume, c_in, c_out, element))
        if factor:
            t = (t - 1) // factor[0] + 1
            h, w = h // factor[1], w // factor[2]
            smaller = t * h * w
            peak = max(peak, volume * c_out * element + smaller * c_out * element)
            volume = smaller
    peak = max(peak, _resnet_peak(volume, widths[-1], widths[-1], element))
    if config.mid_attention:
        peak = max(peak, _attention_peak(volume, widths[-1], element))
    return int(ALLOCATOR_OVERHEAD * peak)


def memory_budget(device: torch.device, given: int | None = None) -> int:
    """Bytes a pass may use: `given` if set, else 90% of free CUDA memory, else half of the
    available system RAM (CPU)."""
    if given is not None:
        return int(given)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9)
    return available_ram() // 2


def available_ram() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
