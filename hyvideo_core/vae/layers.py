"""Building blocks of the causal 3D VAE: causal conv, resnet block, down/up samplers.

Memory: a causal conv only needs a few input frames per output frame, so large inputs are
convolved in time chunks. The GroupNorm+SiLU that precedes most convs, the nearest upsampling
before the upsampler's conv and the replicate padding are all applied per chunk, so none of
those full-size intermediates is ever materialised. Small inputs take the plain path (the same
kernels as the reference, bit for bit).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A conv input (after padding / upsampling) larger than this is streamed in time chunks of
# about this size. Module-level so tests can force the streamed path on tiny inputs.
STREAM_CHUNK_BYTES = 32 << 20


class CausalConv3d(nn.Module):
    """Conv3d after replicate padding: H and W by k//2 on both sides, time by k-1 in front only,
    so output frame t sees input frames <= t. Weight key: `<name>.conv.weight`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: tuple[int, int, int] | int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=self.stride)

    def forward(self, x: torch.Tensor, *, norm: nn.GroupNorm | None = None,
                upsample: tuple[int, int, int] | None = None,
                add_to: torch.Tensor | None = None) -> torch.Tensor:
        """conv(pad(upsample(silu(norm(x))))), the optional steps applied only when given.
        With `add_to`, the result is added into that tensor (in place) and it is returned."""
        geometry = _Geometry(x, self.kernel_size, self.stride, upsample)
        if geometry.input_bytes(x.element_size()) <= 2 * STREAM_CHUNK_BYTES:
            out = self.conv(geometry.pad(_upsample(_norm_silu(x, norm), upsample), time=True))
            return out if add_to is None else add_to.add_(out)
        return self._streamed(x, geometry, norm, upsample, add_to)

    def _streamed(self, x, geometry, norm, upsample, add_to):
        stats = _group_stats(x, norm) if norm is not None else None
        out = add_to
        if out is None:
            out = x.new_empty((x.shape[0], self.conv.out_channels, geometry.t_out, geometry.h_out,
                               geometry.w_out))
        step = geometry.frames_per_chunk(STREAM_CHUNK_BYTES, 4 if norm is not None else x.element_size())
        # The chunk's frame indices already repeat frames for a time upsample: scale space only.
        spatial_up = (1,) + tuple(upsample[1:]) if upsample else None
        for start in range(0, geometry.t_out, step):
            stop = min(start + step, geometry.t_out)
            chunk = x.index_select(2, geometry.source_frames(start, stop).to(x.device))
            if norm is not None:
                chunk = _apply_norm_silu(chunk, norm, stats)
            result = self.conv(geometry.pad(_upsample(chunk, spatial_up), time=False))
            del chunk
            if add_to is None:
                out[:, :, start:stop] = result
            else:
                out[:, :, start:stop] += result
        return out


class _Geometry:
    """Shapes and frame indices of one causal conv call on a (possibly upsampled) input."""

    def __init__(self, x: torch.Tensor, kernel: int, stride: tuple[int, int, int],
                 upsample: tuple[int, int, int] | None):
        _, self.channels, t, h, w = x.shape
        self.kernel, self.time_up = kernel, bool(upsample and upsample[0] == 2)
        fh, fw = (upsample[1], upsample[2]) if upsample else (1, 1)
        self.t_in = 2 * t - 1 if self.time_up else t
        self.h_in, self.w_in = h * fh, w * fw
        pad = kernel // 2
        self.t_out = (self.t_in - 1) // stride[0] + 1
        self.h_out = (self.h_in + 2 * pad - kernel) // stride[1] + 1
        self.w_out = (self.w_in + 2 * pad - kernel) // stride[2] + 1
        self.stride_t = stride[0]
        self.spatial_pad = (pad, pad, pad, pad, 0, 0)

    def frame_bytes(self, element_size: int) -> int:
        pad = 2 * (self.kernel // 2)
        return self.channels * (self.h_in + pad) * (self.w_in + pad) * element_size

    def input_bytes(self, element_size: int) -> int:
        return (self.t_in + self.kernel - 1) * self.frame_bytes(element_size)

    def frames_per_chunk(self, budget: int, element_size: int) -> int:
        frames_in = max(budget // max(self.frame_bytes(element_size), 1), self.kernel)
        return max((frames_in - self.kernel) // self.stride_t + 1, 1)

    def source_frames(self, start: int, stop: int) -> torch.Tensor:
        """Indices into x of the padded, upsampled frames that output frames [start, stop) read."""
        padded = torch.arange(start * self.stride_t, (stop - 1) * self.stride_t + self.kernel)
        logical = (padded - (self.kernel - 1)).clamp_(min=0)  # replicate padding in front
        if self.time_up:  # frame 0 stays single, every later frame is doubled: 2T-1 frames
            logical = torch.where(logical == 0, logical, (logical - 1) // 2 + 1)
        return logical

    def pad(self, x: torch.Tensor, *, time: bool) -> torch.Tensor:
        """Replicate padding; `time=False` for a chunk whose frame indices already hold it."""
        if self.kernel == 1:
            return x
        if time:
            return F.pad(x, self.spatial_pad[:4] + (self.kernel - 1, 0), mode="replicate")
        return F.pad(x, self.spatial_pad, mode="replicate")


def _norm_silu(x: torch.Tensor, norm: nn.GroupNorm | None) -> torch.Tensor:
    if norm is None:
        return x
    return F.silu(norm(x), inplace=True)


def _upsample(x: torch.Tensor, factor: tuple[int, int, int] | None) -> torch.Tensor:
    """Nearest upsampling; with a time factor 2 frame 0 is only upsampled in space (T -> 2T-1)."""
    if factor is None:
        return x
    ft, fh, fw = factor
    t = x.shape[2]
    if ft == 1:
        return F.interpolate(x, scale_factor=(1, fh, fw), mode="nearest")
    first = F.interpolate(x[:, :, :1], scale_factor=(1, fh, fw), mode="nearest")
    if t == 1:
        return first
    rest = F.interpolate(x[:, :, 1:], scale_factor=(ft, fh, fw), mode="nearest")
    return torch.cat((first, rest), dim=2)


def _group_stats(x: torch.Tensor, norm: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, group) mean and 1/std over all frames, from per-chunk float32 moments merged
    with Chan's parallel formula (stable, and no float64, which is slow on consumer GPUs)."""
    b, groups = x.shape[0], norm.num_groups
    count = mean = m2 = None
    step = max(1, STREAM_CHUNK_BYTES // max(x[:, :, :1].numel() * 4, 1))
    for start in range(0, x.shape[2], step):
        chunk = x[:, :, start:start + step].reshape(b, groups, -1).float()
        n = chunk.shape[-1]
        var, avg = torch.var_mean(chunk, dim=-1, correction=0)
        del chunk
        if count is None:
            count, mean, m2 = n, avg, var * n
            continue
        delta = avg - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + var * n + delta.square() * (count * n / total)
        count = total
    return mean, torch.rsqrt(m2 / count + norm.eps)


def _apply_norm_silu(chunk: torch.Tensor, norm: nn.GroupNorm, stats) -> torch.Tensor:
    mean, rstd = stats
    b, c = chunk.shape[:2]
    g = norm.num_groups
    shape = (b, g, c // g) + tuple(chunk.shape[2:])
    h = chunk.float().reshape(shape)
    h.sub_(mean.view(b, g, 1, *([1] * (chunk.dim() - 2)))).mul_(rstd.view(b, g, 1, *([1] * (chunk.dim() - 2))))
    h = h.reshape(chunk.shape)
    affine = (1, c) + (1,) * (chunk.dim() - 2)
    h.mul_(norm.weight.float().view(affine)).add_(norm.bias.float().view(affine))
    return F.silu(h, inplace=True).to(chunk.dtype)


class ResnetBlockCausal3D(nn.Module):
    """GN -> SiLU -> conv1 -> GN -> SiLU -> conv2, plus a 1x1x1 causal shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.conv_shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x, norm=self.norm1)
        h = self.conv2(h, norm=self.norm2)
        if self.conv_shortcut is None:
            return h.add_(x)
        return self.conv_shortcut(x, add_to=h)


class DownsampleCausal3D(nn.Module):
    """Causal k=3 conv with stride (t, 2, 2): frames T -> (T-1)/t + 1, so frame 0 stays alone."""

    def __init__(self, channels: int, stride: tuple[int, int, int]):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UpsampleCausal3D(nn.Module):
    """Nearest upsampling (frame 0 in space only: T -> 2T-1 with a time factor) then a causal conv."""

    def __init__(self, channels: int, factor: tuple[int, int, int]):
        super().__init__()
        self.factor = tuple(factor)
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, upsample=self.factor)
