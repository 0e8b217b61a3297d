"""Device memory of a (tiled) VAE decode, from the VAE's structure in SPEC 3 (not imported).

Decoder, for a latent tile of t frames and h x w: conv_in 16->512 and the mid block at (t, h, w);
up block 0 (512, 3 resnets) then a spatial x2 upsample; block 1 (512) then time+space x2
(t -> 2t-1); block 2 (512->256) then time+space x2; block 3 (256->128) at full resolution; conv_out.

Per level the live bytes are taken at the worst point of a resnet (input + norm + activation,
or input + conv output + padded copy + next output: max(3*Cin, 2*Cin+Cout, Cin+3*Cout) values per
voxel) and of an upsampler (nearest interpolation computed in float32, then cast, then a conv).
The largest level is the first resnet of block 3 / the last upsampler: ~1536 bytes per output
voxel in fp16/bf16, i.e. ~6.4 GB for the reference 256 px x 65-frame tile.
"""
from __future__ import annotations

import torch

from ..sampling.latent_format import LATENT_CHANNELS

VAE_PARAMETERS = 246_478_803      # encoder + decoder (SPEC 3.1)
# (channels in, channels out, time upsample, space upsample) of the decoder's up blocks
UP_BLOCKS = ((512, 512, False, True), (512, 512, True, True), (512, 256, True, True), (256, 128, False, False))


def _resnet(c_in: int, c_out: int) -> int:
    return max(3 * c_in, 2 * c_in + c_out, c_in + 3 * c_out)


def tile_activation_bytes(t: int, h: int, w: int, s: int) -> int:
    """Peak live bytes while decoding one latent tile of t x h x w (dtype of s bytes)."""
    peak = (LATENT_CHANNELS + 512) * t * h * w * s            # conv_in
    peak = max(peak, _resnet(512, 512) * t * h * w * s)        # mid block
    for c_in, c_out, up_t, up_s in UP_BLOCKS:
        voxels = t * h * w
        peak = max(peak, _resnet(c_in, c_out) * voxels * s)
        if up_t or up_s:
            t2, h2, w2 = (2 * t - 1 if up_t else t), (2 * h if up_s else h), (2 * w if up_s else w)
            out = t2 * h2 * w2
            interpolate = c_out * (voxels * (s + 4) + out * (4 + s))
            peak = max(peak, interpolate, 3 * c_out * out * s)
            t, h, w = t2, h2, w2
    return peak


def vae_decode_bytes(batch: int, latent: tuple[int, int, int], tile_px: int | None, tile_frames: int | None,
                     dtype: torch.dtype) -> dict[str, int]:
    t, h, w = latent
    lt = t if tile_frames is None else min(t, tile_frames // 4 + 1)
    lh = h if tile_px is None else min(h, tile_px // 8)
    lw = w if tile_px is None else min(w, tile_px // 8)
    s = dtype.itemsize
    frames = 4 * (t - 1) + 1
    return {
        "decode weights": VAE_PARAMETERS * s,
        "decode tile activations": batch * tile_activation_bytes(lt, lh, lw, s),
        "decoded video (fp32)": batch * 3 * frames * h * 8 * w * 8 * 4,
    }
