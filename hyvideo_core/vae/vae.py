"""The public VAE object: encode / decode (plain or tiled) on raw latents, plus the one place
where the latent scaling factor is applied."""
from __future__ import annotations

import functools
import logging
from typing import Callable

import torch
from torch import nn

from ..errors import InvalidInputError
from .autoencoder import Decoder, Encoder
from .config import VAEConfig
from .posterior import DiagonalGaussian
from .tiling import TileSpec, decode_tile_count, snap_tiles, tiled_decode, tiled_encode

log = logging.getLogger(__name__)


class HunyuanVideoVAE(nn.Module):
    """AutoencoderKLCausal3D with the official state-dict names.

    Conventions: video is [B, 3, F, H, W] in -1..1 with F = 4k+1 and H, W multiples of 8; latents
    are *raw* [B, 16, k+1, H/8, W/8] (ComfyUI's LATENT convention); the sampler scales them
    into the DiT's space (hyvideo_core.sampling.latent_format, the one place that does).
    `tiling` arguments: None (one pass, exact), a TileSpec, or "auto" (fit a memory budget).
    """

    def __init__(self, config: VAEConfig, with_encoder: bool = True):
        super().__init__()
        self.config = config
        c = config.latent_channels
        self.encoder = Encoder(config) if with_encoder else None
        self.quant_conv = nn.Conv3d(2 * c, 2 * c, 1) if with_encoder else None
        self.decoder = Decoder(config)
        self.post_quant_conv = nn.Conv3d(c, c, 1)
        self.last_decode_report = None

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    # --- encode -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: torch.Tensor, tiling: TileSpec | str | None = None,
               memory_budget: int | None = None) -> DiagonalGaussian:
        """Video [B, 3, 4k+1, H, W] in -1..1 -> posterior over raw latents (per sample)."""
        self._check_video(video)
        if tiling == "auto":
            from .tile_choice import choose_encode_tiles
            tiling = choose_encode_tiles(self, video.shape, memory_budget)
        tiles = None if tiling is None else snap_tiles(tiling, self.config)
        # Latents leave the VAE in float32 whatever its dtype: they are small, and ComfyUI's
        # LATENT and the sampler expect float32.
        moments = [self._encode_one(v.to(self.device, self.dtype), tiles).float() for v in video.split(1)]
        return DiagonalGaussian.from_moments(torch.cat(moments) if len(moments) > 1 else moments[0])

    def _encode_one(self, video: torch.Tensor, tiles: TileSpec | None) -> torch.Tensor:
        if tiles is None:
            return self._encode_plain(video)
        return tiled_encode(video, self._encode_plain, tiles, self.config)

    def _encode_plain(self, video: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(video))

    def _check_video(self, video: torch.Tensor) -> None:
        if self.encoder is None:
            raise InvalidInputError(
                "VAE encode: this VAE was loaded from a decoder-only file; load the full VAE "
                "(e.g. hunyuan_video_vae_bf16.safetensors) to encode.")
        if video.dim() != 5 or video.shape[1] != self.config.in_channels:
            raise InvalidInputError(
                f"VAE encode: video has shape {list(video.shape)}; expected [B, "
                f"{self.config.in_channels}, frames, height, width] in -1..1.")
        frames, height, width = video.shape[2:]
        step = self.config.temporal_compression
        if (frames - 1) % step:
            lower = (frames - 1) // step * step + 1
            raise InvalidInputError(
                f"VAE encode: {frames} frames were given; the causal VAE encodes 4k+1 frames "
                f"(rejected, not snapped): use {lower} or {lower + step} frames, e.g. trim with "
                "hyvideo_core.vae.images.trim_to_valid_frames.")
        s = self.config.spatial_compression
        if height % s or width % s:
            raise InvalidInputError(
                f"VAE encode: frame size {width}x{height} is not a multiple of {s}; resize or crop "
                f"to e.g. {width // s * s}x{height // s * s}.")

    # --- decode -----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latent: torch.Tensor, tiling: TileSpec | str | None = None, *,
               retry_on_oom: bool = True, memory_budget: int | None = None,
               output_device: torch.device | str | None = None,
               progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Raw latents [B, 16, T, h, w] -> video [B, 3, 4(T-1)+1, 8h, 8w] (not clamped).

        On an out-of-memory error the decode is retried with smaller tiles (halving spatial, then
        temporal tiles); `last_decode_report` says which tiles worked. `progress(done, total)` is
        called after every tile; whatever it raises (e.g. a host's interrupt) stops the decode."""
        self._check_latent(latent)
        from .tile_choice import decode_with_fallback
        video, report = decode_with_fallback(self, latent, tiling, retry_on_oom=retry_on_oom,
                                             memory_budget=memory_budget, output_device=output_device,
                                             progress=progress)
        self.last_decode_report = report
        return video

    def decode_once(self, latent: torch.Tensor, tiles: TileSpec | None,
                    output_device: torch.device | str | None = None,
                    progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """One decode attempt with fixed tiles (no fallback); batch decoded sample by sample."""
        tiles = None if tiles is None else snap_tiles(tiles, self.config)
        decode = self._decode_plain if progress is None else _counted(
            self._decode_plain, progress, latent.shape[0] * decode_tile_count(latent.shape, tiles, self.config))
        out = None
        for index, sample in enumerate(latent.split(1)):
            sample = sample.to(self.device, self.dtype)
            if tiles is None:
                video = decode(sample)
            else:  # tiles are assembled straight on the output device
                video = tiled_decode(sample, decode, tiles, self.config, out_device=output_device)
            video = video.to(output_device) if output_device is not None else video
            if latent.shape[0] == 1:
                return video
            if out is None:
                out = video.new_empty((latent.shape[0],) + video.shape[1:])
            out[index] = video[0]
            del video
        return out

    def _decode_plain(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latent))

    def _check_latent(self, latent: torch.Tensor) -> None:
        c = self.config.latent_channels
        if latent.dim() != 5 or latent.shape[1] != c:
            hint = " (a 4-D image latent: add a frame axis)" if latent.dim() == 4 else ""
            raise InvalidInputError(
                f"VAE decode: latent has shape {list(latent.shape)}{hint}; expected [B, {c}, frames, "
                f"height, width] raw HunyuanVideo latents ({c} channels).")


def _counted(run: Callable[[torch.Tensor], torch.Tensor], progress: Callable[[int, int], None], total: int):
    """`run`, reporting (done, total) after every call."""
    done = 0

    def counted(tile: torch.Tensor) -> torch.Tensor:
        nonlocal done
        out = run(tile)
        done += 1
        progress(done, total)
        return out
    return counted


@functools.lru_cache(maxsize=16)
def vae_weight_bytes(config: VAEConfig, dtype: torch.dtype, with_encoder: bool = True) -> int:
    """Bytes of every VAE tensor in `dtype` (a whole VAE visits the device to decode), counted on
    a model built on the meta device (no memory)."""
    from ..runtime.placement import module_bytes
    with torch.device("meta"):
        model = HunyuanVideoVAE(config, with_encoder=with_encoder).to(dtype)
    return module_bytes(model)
