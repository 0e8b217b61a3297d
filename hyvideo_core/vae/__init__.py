"""HunyuanVideo's causal 3D VAE ("884-16c-hy"): exact encode/decode, tiled in space and time."""
from .config import PRESETS, SCALING_FACTOR, VAEConfig
from .images import images_to_video, trim_to_valid_frames, video_to_images
from .posterior import DiagonalGaussian
from .tile_choice import DecodeReport
from .tiling import TileSpec
from .vae import HunyuanVideoVAE

__all__ = ["PRESETS", "SCALING_FACTOR", "VAEConfig", "DiagonalGaussian", "DecodeReport", "TileSpec",
           "HunyuanVideoVAE", "images_to_video", "load_vae", "trim_to_valid_frames", "video_to_images"]


def __getattr__(name: str):
    if name == "load_vae":
        from .loader import load_vae
        return load_vae
    raise AttributeError(f"module 'hyvideo_core.vae' has no attribute {name!r}")
