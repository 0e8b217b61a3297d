"""Where tiled decoding of the random-weight VAE loses its PSNR: per-tile GroupNorm statistics.

One central core region of the latent is decoded from crops with growing context (halo) around
it and compared with the same region of the untiled decode, three ways:

  per tile     the crop is decoded on its own: its own GroupNorm statistics and its own mid-block
               attention, as every tile of the reference's tiled decode (ours) is;
  whole mid    the mid block (conv_in, resnets, attention) runs once on the whole latent; the
               up path runs on the crop with the crop's own GroupNorm statistics;
  oracle       as "whole mid", but every GroupNorm of the up path replays the statistics of the
               untiled decode. Only possible after an untiled decode: a diagnostic, not a mode.

If the tiles' local geometry (replicate padding, upsampling, causal frames) is right, the oracle
column rises with the halo toward exact. The gap between it and the other columns is what
per-tile statistics cost with untrained weights, whatever the overlap.

    python benchmarks/vae_tile_statistics.py                  # 16x5x32x32 latent, 8-latent-px core (~10 min)
    python benchmarks/vae_tile_statistics.py --latent 16 2 24 24 --halos 0 4
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vae_tiling import _latent, psnr  # noqa: E402  (same latent and PSNR as the tiling benchmark)

from hyvideo_core.vae import PRESETS, HunyuanVideoVAE, layers  # noqa: E402


class StatisticsTape:
    """Records the (mean, 1/std) of every GroupNorm call of one run and replays them in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.replaying = False
        self.position = 0

    def stats(self, x: torch.Tensor, norm: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
        if self.replaying:
            self.position += 1
            return self.entries[self.position - 1]
        var, mean = torch.var_mean(x.reshape(x.shape[0], norm.num_groups, -1).float(), -1, correction=0)
        self.entries.append((mean, torch.rsqrt(var + norm.eps)))
        return self.entries[-1]

    @contextmanager
    def active(self, replay: bool):
        self.replaying, self.position = replay, 0
        tape = self

        def group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
            mean, rstd = tape.stats(x, norm)
            b, c = x.shape[:2]
            y = (x.reshape(b, norm.num_groups, -1).float() - mean[..., None]) * rstd[..., None]
            affine = (1, c) + (1,) * (x.dim() - 2)
            return (y.reshape(x.shape) * norm.weight.view(affine) + norm.bias.view(affine)).to(x.dtype)

        with mock.patch.object(nn.GroupNorm, "forward", group_norm), \
                mock.patch.object(layers, "_group_stats", lambda x, norm: tape.stats(x, norm)):
            yield
        if replay and self.position != len(self.entries):
            raise RuntimeError(f"replayed {self.position} of {len(self.entries)} GroupNorm calls")


def up_path(decoder, x: torch.Tensor) -> torch.Tensor:
    for block in decoder.up_blocks:
        x = block(x)
    return decoder.conv_out(x, norm=decoder.conv_norm_out)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent", type=int, nargs=4, default=[16, 5, 32, 32], metavar=("C", "T", "H", "W"))
    parser.add_argument("--core", type=int, default=8, help="core edge in latent pixels (centred)")
    parser.add_argument("--halos", type=int, nargs="+", default=[0, 2, 4, 6], help="context in latent pixels")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = HunyuanVideoVAE(PRESETS["884-16c-hy"], with_encoder=False).eval().requires_grad_(False)
    decoder, latent = vae.decoder, _latent(tuple(args.latent), seed=1)
    c, t, h, w = args.latent
    top, left, core = (h - args.core) // 2, (w - args.core) // 2, args.core
    print(f"VAE decoder 884-16c-hy (random weights, fp32), latent {c}x{t}x{h}x{w}; core "
          f"{8 * core}x{8 * core} px at the centre; PSNR of the core vs the untiled decode")

    start = time.perf_counter()
    trunk = decoder.mid_block(decoder.conv_in(vae.post_quant_conv(latent)))
    tape = StatisticsTape()
    with tape.active(replay=False):
        full = up_path(decoder, trunk)
    reference = full[..., 8 * top:8 * (top + core), 8 * left:8 * (left + core)]
    print(f"  untiled decode {time.perf_counter() - start:.0f} s")
    print(f"  {'halo':>12s} | {'per tile':>9s} | {'whole mid':>9s} | {'oracle':>9s}")
    for halo in args.halos:
        rows = slice(max(top - halo, 0), top + core + halo)
        cols = slice(max(left - halo, 0), left + core + halo)

        def core_of(video: torch.Tensor) -> torch.Tensor:
            y, x = 8 * (top - rows.start), 8 * (left - cols.start)
            return video[..., y:y + 8 * core, x:x + 8 * core]

        own = vae.decode(latent[..., rows, cols], tiling=None, retry_on_oom=False)
        whole_mid = up_path(decoder, trunk[..., rows, cols])
        with tape.active(replay=True):
            oracle = up_path(decoder, trunk[..., rows, cols])
        scores = [psnr(core_of(v), reference) for v in (own, whole_mid, oracle)]
        print(f"  {halo:3d} lat px ({8 * halo:3d} px) | " + " | ".join(f"{s:6.1f} dB" for s in scores), flush=True)


if __name__ == "__main__":
    main()
