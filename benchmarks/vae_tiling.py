"""Tiled vs untiled decode of the real-size (884-16c-hy) VAE decoder with random weights.

Each decode runs in its own subprocess so that process peak RSS (resource.getrusage maxrss)
measures it alone; the parent compares the outputs (PSNR on the 0..1 images) and prints ratios
of the peak RSS and of the working memory (peak RSS minus the RSS just before decoding, i.e.
without the interpreter and the 146M decoder weights both runs hold).

    python benchmarks/vae_tiling.py                       # 16x5x32x32 latent -> 17 frames 256x256
    python benchmarks/vae_tiling.py --tiles 128 32 0 0    # spatial px, overlap, frames, overlap
    python benchmarks/vae_tiling.py --child tiled ...     # (internal) one measured decode

The weights are PyTorch's default initialisation (seeded) and the latent is a seeded, spatially
smooth, stationary random field (unit variance, correlation length ~2 latent pixels), as a
real latent is. Random weights are not a trained VAE, so the PSNR here is only indicative: every
tile normalises with its own GroupNorm statistics (as the reference's tiles do), and an untrained
decoder turns those per-tile statistics into a different picture whatever the overlap.
benchmarks/vae_tile_statistics.py measures this: more context around a tile does not raise its
PSNR, while the same crops with the untiled decode's statistics (and mid block) reach
35-71 dB. Untiled decoding is exact.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _latent(shape, seed: int):
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1,) + shape, generator=g)
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = kernel / kernel.sum()
    c = shape[0]
    smooth = noise
    for dim in (3, 4):  # separable binomial blur over h and w, replicate edges
        size = [1, 1, 1, 1, 1]
        size[dim] = 5
        weight = kernel.view(size).expand(c, 1, *size[2:]).contiguous()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (4 - dim)] = pad[2 * (4 - dim) + 1] = 2
        smooth = F.conv3d(F.pad(smooth, pad, mode="replicate"), weight, groups=c)
    return (smooth - smooth.mean()) / smooth.std()


def child(args) -> None:
    import torch
    from safetensors.torch import save_file
    from hyvideo_core.vae import PRESETS, HunyuanVideoVAE, TileSpec

    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    vae = HunyuanVideoVAE(PRESETS["884-16c-hy"], with_encoder=False).to(dtype).eval().requires_grad_(False)
    latent = _latent(tuple(args.latent), seed=1).to(dtype)
    tiles = None
    if args.child == "tiled":
        s, so, t, to = args.tiles
        tiles = TileSpec(s or None, so, t or None, to)
    before = _rss_bytes()
    start = time.perf_counter()
    video = vae.decode(latent, tiling=tiles, retry_on_oom=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    save_file({"video": video.float().contiguous()}, args.out)
    print(json.dumps({"mode": args.child, "peak_rss": peak, "rss_before": before, "seconds": seconds,
                      "shape": list(video.shape)}))


def run_child(mode: str, args, out: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--out", out, "--dtype", args.dtype,
           "--threads", str(args.threads), "--latent", *map(str, args.latent),
           "--tiles", *map(str, args.tiles)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def psnr(a, b) -> float:
    import torch.nn.functional as F
    a, b = (a / 2 + 0.5).clamp(0, 1), (b / 2 + 0.5).clamp(0, 1)
    return 10 * math.log10(1.0 / max(F.mse_loss(a, b).item(), 1e-20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["tiled", "untiled"])
    parser.add_argument("--out")
    parser.add_argument("--latent", type=int, nargs=4, default=[16, 5, 32, 32], metavar=("C", "T", "H", "W"))
    parser.add_argument("--tiles", type=int, nargs=4, default=[64, 16, 0, 0],
                        metavar=("SPATIAL", "S_OVERLAP", "TEMPORAL", "T_OVERLAP"),
                        help="tile settings (0 disables an axis); default 64 px / 16 px, untiled in time")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from safetensors.torch import load_file
    c, t, h, w = args.latent
    print(f"VAE decoder 884-16c-hy (random weights, {args.dtype}), latent {c}x{t}x{h}x{w} -> "
          f"{4 * (t - 1) + 1} frames {8 * h}x{8 * w}; tiles {args.tiles} (px, px, frames, frames)")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for mode in ("untiled", "tiled"):
            runs[mode] = run_child(mode, args, os.path.join(tmp, f"{mode}.safetensors"))
            r = runs[mode]
            print(f"  {mode:8s} peak RSS {r['peak_rss'] / 2**30:6.2f} GiB, before decode "
                  f"{r['rss_before'] / 2**30:5.2f} GiB, working {(r['peak_rss'] - r['rss_before']) / 2**30:6.2f} GiB, "
                  f"{r['seconds']:7.1f} s")
        quality = psnr(load_file(os.path.join(tmp, "tiled.safetensors"))["video"],
                       load_file(os.path.join(tmp, "untiled.safetensors"))["video"])
    tiled, untiled = runs["tiled"], runs["untiled"]
    peak_ratio = tiled["peak_rss"] / untiled["peak_rss"]
    work_ratio = (tiled["peak_rss"] - tiled["rss_before"]) / (untiled["peak_rss"] - untiled["rss_before"])
    print(f"ratio tiled/untiled: peak RSS {peak_ratio:.3f}x, working memory {work_ratio:.3f}x, "
          f"time {tiled['seconds'] / untiled['seconds']:.2f}x; PSNR tiled vs untiled {quality:.2f} dB")
    print(f"target: peak <= 0.35x at PSNR >= 35 dB -> peak RSS {'met' if peak_ratio <= 0.35 else 'NOT met'}, "
          f"working memory {'met' if work_ratio <= 0.35 else 'NOT met'}, PSNR {'met' if quality >= 35 else 'NOT met'}")


if __name__ == "__main__":
    main()
