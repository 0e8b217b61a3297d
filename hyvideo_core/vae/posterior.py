"""The encoder's output distribution: a diagonal Gaussian over raw (unscaled) latents."""
from __future__ import annotations

from dataclasses import dataclass

import torch

LOGVAR_RANGE = (-30.0, 20.0)


@dataclass
class DiagonalGaussian:
    """mean / logvar [B, C, T, H, W]; logvar is clamped to [-30, 20] like the reference."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(*LOGVAR_RANGE))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * noise; the noise is drawn on the generator's device (so a CPU generator
        gives the same latents on any device) and moved to the mean's device."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)
