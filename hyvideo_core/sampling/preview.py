"""Cheap latent -> RGB previews with ComfyUI's HunyuanVideo latent-RGB factors (latent2rgb)."""
from __future__ import annotations

import torch

# comfy/latent_formats.py, class HunyuanVideo: rows are the 16 latent channels, columns R, G, B.
# They apply to latents in the model's (scaled) space, as ComfyUI previews the sampler's x0.
LATENT_RGB_FACTORS = (
    (-0.0395, -0.0331, 0.0445),
    (0.0696, 0.0795, 0.0518),
    (0.0135, -0.0945, -0.0282),
    (0.0108, -0.0250, -0.0765),
    (-0.0209, 0.0032, 0.0224),
    (-0.0804, -0.0254, -0.0639),
    (-0.0991, 0.0271, -0.0669),
    (-0.0646, -0.0422, -0.0400),
    (-0.0696, -0.0595, -0.0894),
    (-0.0799, -0.0208, -0.0375),
    (0.1166, 0.1627, 0.0962),
    (0.1165, 0.0432, 0.0407),
    (-0.2315, -0.1920, -0.1355),
    (-0.0270, 0.0401, -0.0821),
    (-0.0616, -0.0997, -0.0727),
    (0.0249, -0.0469, -0.1703),
)
LATENT_RGB_BIAS = (0.0259, -0.0192, -0.0761)


def latent_to_rgb(latent: torch.Tensor) -> torch.Tensor:
    """[B,16,T,h,w] scaled latent -> [B,T,h,w,3] float in 0..1 (one pixel per latent pixel)."""
    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latent.device)
    bias = torch.tensor(LATENT_RGB_BIAS, dtype=torch.float32, device=latent.device)
    rgb = latent.float().movedim(1, -1) @ factors + bias
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
