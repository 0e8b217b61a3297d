"""HunyuanVideo's causal 3D VAE ("884-16c-hy"): exact encode/decode, tiled in space and time."""
from .config import PRESETS, SCALING_FACTOR, VAEConfig
from .posterior import DiagonalGaussian
from .tile_choice import DecodeReport
from .tiling import TileSpec
from .vae import HunyuanVideoVAE

__all__ = ["PRESETS", "SCALING_FACTOR", "VAEConfig", "DiagonalGaussian", "DecodeReport", "TileSpec",
           "HunyuanVideoVAE", "load_vae"]


def __getattr__(name: str):
    if name == "load_vae":
        from .loader import load_vae
        return load_vae
    raise AttributeError(f"module 'hyvideo_core.vae' has no attribute {name!r}")
