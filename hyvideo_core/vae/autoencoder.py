"""Encoder and decoder networks of the causal 3D VAE (official state-dict names)."""
from __future__ import annotations

import torch
from torch import nn

from .attention import MidBlockCausal3D
from .config import VAEConfig
from .layers import CausalConv3d, DownsampleCausal3D, ResnetBlockCausal3D, UpsampleCausal3D

EPS = 1e-6


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int,
                 stride: tuple[int, int, int] | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlockCausal3D(in_channels if i == 0 else out_channels, out_channels, groups, EPS)
            for i in range(layers))
        self.downsamplers = nn.ModuleList([DownsampleCausal3D(out_channels, stride)] if stride else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for down in self.downsamplers:
            x = down(x)
        return x


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int,
                 factor: tuple[int, int, int] | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlockCausal3D(in_channels if i == 0 else out_channels, out_channels, groups, EPS)
            for i in range(layers))
        self.upsamplers = nn.ModuleList([UpsampleCausal3D(out_channels, factor)] if factor else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for up in self.upsamplers:
            x = up(x)
        return x


class Encoder(nn.Module):
    """Video [B, 3, 4k+1, 8h, 8w] -> moments [B, 2*latent, k+1, h, w] (before quant_conv)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = CausalConv3d(config.in_channels, widths[0], 3)
        self.down_blocks = nn.ModuleList(
            DownBlock(widths[max(i - 1, 0)], widths[i], config.layers_per_block, groups, factor)
            for i, factor in enumerate(config.resample_factors()))
        self.mid_block = MidBlockCausal3D(widths[-1], groups, config.mid_attention, EPS)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(x, norm=self.conv_norm_out)


class Decoder(nn.Module):
    """Latent [B, latent, k+1, h, w] (after post_quant_conv) -> video [B, 3, 4k+1, 8h, 8w]."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups = config.block_out_channels[::-1], config.norm_num_groups
        self.conv_in = CausalConv3d(config.latent_channels, widths[0], 3)
        self.mid_block = MidBlockCausal3D(widths[0], groups, config.mid_attention, EPS)
        self.up_blocks = nn.ModuleList(
            UpBlock(widths[max(i - 1, 0)], widths[i], config.layers_per_block + 1, groups, factor)
            for i, factor in enumerate(config.resample_factors()))
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = CausalConv3d(widths[-1], config.out_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(x, norm=self.conv_norm_out)
