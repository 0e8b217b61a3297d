"""Memory of a VAE pass: an estimate from the architecture, the device's budget, OOM detection.

The estimate walks the network the way layers.py runs it (streamed convs keep the input, the
output and a few chunk buffers alive; small convs keep input, normalised copy, padded copy and
output) and returns the largest live set in bytes, times ALLOCATOR_OVERHEAD. It ignores weights,
which are resident anyway.
"""
from __future__ import annotations

import os

import torch

from . import attention, layers
from .config import VAEConfig

# Measured peak working memory / live-set estimate for the 884-16c decoder on CPU (fp32, 17
# frames at 256x256 untiled: 1.24; 128x128 tiles: 1.36): conv workspaces, format reorders and
# allocator fragmentation.
ALLOCATOR_OVERHEAD = 1.4


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
