"""Long videos with and without context windows: one sampling step's time and activation peak.

The medium DiT preset (hidden 768, 6 heads, 4 double + 8 single blocks; random weights, fp32) at a
small spatial size (64x64 px: an 8x8 latent, 16 image tokens of 2x2 patches per latent frame) so that
the whole benchmark runs in about 3 minutes on 2 cores, for 129 / 257 / 513 frames (33 / 65 / 129 latent
frames; 528 / 1040 / 2064 image tokens). At these token counts the blocks' linear layers dominate, so
even without windows time grows about linearly; at real sizes (960x544: 2040 tokens per latent frame)
attention dominates and the time without windows grows towards frames^2, while with windows it stays
linear in the number of windows. With windows: 129-frame windows
overlapping by 32 (33 / 8 latent frames), static schedule, FreeNoise off (it only permutes noise).

Each figure is one whole `sample()` call with steps=1 (noise, the step's forwards, the blend, the
solver), after a warm-up run. Memory: the process's peak resident set during the call minus the
resident set just before it, from Linux's VmHWM after resetting it (`echo 5 > /proc/self/clear_refs`).
The script re-runs itself with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_), so
every tensor of 64 KiB or more is mapped when allocated and returned to the OS when freed: the resident
set then follows the live tensors, and the peak counts the activations, attention buffers, the latent
and the blend buffers of the call (not memory cached from earlier calls). Times include the page faults
this costs (the same for both variants). The exponents are least-squares slopes of log(time) and
log(memory) against log(frames). Linux only.

    python benchmarks/long_video.py [--size 96] [--frames 129,257,513] [--threads 2]
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time

import torch

from hyvideo_core.model.config import PRESETS
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.sampling import ContextWindows, SamplingOptions, sample

from cache_speedup import build_embeds   # the same random prompt as the cache benchmark

WINDOWS = ContextWindows(129, 32, "static", freenoise=False)
MMAP_THRESHOLD = 65536


def build_model() -> HunyuanVideoTransformer:
    config = PRESETS["medium"]
    torch.manual_seed(0)
    model = HunyuanVideoTransformer(config)
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised modulation would make the blocks trivial
            p.copy_(torch.randn_like(p) * (1.0 / max(1, p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.1))
    return model.eval()


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def measure(model, embeds, size: int, frames: int, context):
    """(seconds, peak MiB above the resident set before the call, forwards)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                     # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = sample(model, embeds, SamplingOptions(steps=1, seed=0, context=context),
                    width=size, height=size, frames=frames)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") - before
    forwards = result.forwards
    del result
    return seconds, peak / 1024, forwards


def slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="width = height in pixels (multiple of 16)")
    parser.add_argument("--frames", default="129,257,513")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != str(MMAP_THRESHOLD):   # see the docstring
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})
    logging.getLogger("hyvideo_core").setLevel(logging.ERROR)   # the per-run notes (e.g. RIFLEx advice)
    torch.set_num_threads(args.threads)
    frames = [int(f) for f in args.frames.split(",")]
    model = build_model()
    embeds = build_embeds(model.config)
    tokens = (args.size // 16) ** 2
    print(f"medium DiT (hidden {model.config.hidden_size}, {model.config.double_blocks}+{model.config.single_blocks} "
          f"blocks), fp32, {args.threads} threads, {args.size}x{args.size} px ({tokens} tokens per latent frame), "
          f"1 step; windows: {WINDOWS.length} frames, overlap {WINDOWS.overlap}, {WINDOWS.schedule}")
    measure(model, embeds, args.size, min(frames), None)      # warm-up
    rows = {}
    for label, context in (("no windows", None), ("windows", WINDOWS)):
        for n in frames:
            rows[label, n] = measure(model, embeds, args.size, n, context)
    print(f"{'frames':>6} {'latent':>6} {'tokens':>7} | {'no windows: s':>13} {'MiB':>7} {'fwd':>3} | "
          f"{'windows: s':>10} {'MiB':>7} {'fwd':>3}")
    for n in frames:
        t = (n - 1) // 4 + 1
        a, b = rows["no windows", n], rows["windows", n]
        print(f"{n:>6} {t:>6} {t * tokens:>7} | {a[0]:>13.2f} {a[1]:>7.0f} {a[2]:>3} | {b[0]:>10.2f} {b[1]:>7.0f} "
              f"{b[2]:>3}")
    for label in ("no windows", "windows"):
        times = [rows[label, n][0] for n in frames]
        peaks = [rows[label, n][1] for n in frames]
        print(f"exponents ({label}): time ~ frames^{slope(frames, times):.2f}, peak memory ~ "
              f"frames^{slope(frames, peaks):.2f}")
    windowed = [n for n in frames if n > WINDOWS.length]
    if len(windowed) >= 2:
        times = [rows["windows", n][0] for n in windowed]
        peaks = [rows["windows", n][1] for n in windowed]
        print(f"exponents (windows, {'/'.join(map(str, windowed))} frames only, where windows are used): time ~ "
              f"frames^{slope(windowed, times):.2f}, peak memory ~ frames^{slope(windowed, peaks):.2f}")


if __name__ == "__main__":
    main()
