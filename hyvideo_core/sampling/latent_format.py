"""The one place where latents cross between ComfyUI's LATENT convention and the model's space.

A LATENT (`{"samples": [B,16,T,H,W]}`) holds raw VAE latents, as ComfyUI's native HunyuanVideo
latent format does; its `process_in` multiplies by 0.476986 before the model and `process_out`
divides after (COMFYUI_HOST 8). The official pipeline does the same around the VAE (SPEC 3.3).
The sampler works in the scaled space: noise, sigmas and the DiT all live there.
"""
from __future__ import annotations

import torch

from ..vae.config import SCALING_FACTOR

LATENT_SCALE = SCALING_FACTOR  # the VAE's scaling_factor, 0.476986
LATENT_CHANNELS = 16


def to_model_space(raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent (LATENT convention) -> the space the DiT samples in."""
    return raw * LATENT_SCALE


def to_raw_latent(scaled: torch.Tensor) -> torch.Tensor:
    """Sampler output -> raw VAE latent for a LATENT dict / the VAE decoder."""
    return scaled / LATENT_SCALE
