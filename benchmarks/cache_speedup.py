"""Cache policies vs no cache: 50 sampling steps on a medium-depth random DiT, in one run.

For every cache policy (TeaCache, first-block cache, EasyCache, MagCache) it prints, at the
policy's published default threshold and at a threshold that skips the same number of forwards N
for every policy (found by a small bisection per policy, `--match-skips`), the full forwards run,
the forwards skipped, the wall-time ratio against no cache and the relative L2 difference of the
final latent. The model has the medium preset's block structure (4 double + 8 single blocks,
head dim 128) at a narrower width so that the runs fit in a few minutes on a shared 2-core CPU;
`--hidden 768` gives the full medium preset. Random weights: quality figures are indicative only.

    python benchmarks/cache_speedup.py [--steps 50] [--hidden 256] [--threads 1] [--match-skips 20]
"""
from __future__ import annotations

import argparse
import time

import torch

from hyvideo_core.model.config import PRESETS
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.sampling import PromptPair, PromptTensors, SamplingOptions, sample
from hyvideo_core.sampling.cache import CACHE_POLICIES, DEFAULT_THRESHOLDS, make_cache

SIZE = {"width": 128, "height": 96, "frames": 9}   # latent [1, 16, 3, 12, 16]: 144 image tokens
TEXT_TOKENS = 32


def build_model(hidden: int) -> HunyuanVideoTransformer:
    heads = hidden // 128
    config = PRESETS["medium"].replace(hidden_size=hidden, heads=heads, text_dim=256, pooled_text_dim=128)
    torch.manual_seed(0)
    return HunyuanVideoTransformer(config).eval()


def build_embeds(config) -> PromptPair:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    mask[:, 24:] = 0
    return PromptPair(PromptTensors(torch.randn(1, TEXT_TOKENS, config.text_dim, generator=g), mask,
                                    torch.randn(1, config.pooled_text_dim, generator=g)))


def run(model, embeds, steps: int, policy):
    """(result, wall seconds, CPU seconds); CPU time is steadier than wall time on a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = sample(model, embeds, SamplingOptions(steps=steps, seed=0), cache=policy, **SIZE)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def matching_threshold(model, embeds, steps: int, name: str, target: int, rounds: int = 9):
    """A threshold at which policy `name` skips `target` forwards (or the closest found): grow
    the upper bound from the default until it skips enough, then bisect. Returns (threshold,
    skipped, runs)."""
    seen: dict[float, int] = {}

    def skipped(threshold: float) -> int:
        if threshold not in seen:
            seen[threshold] = sample(model, embeds, SamplingOptions(steps=steps, seed=0),
                                     cache=make_cache(name, threshold), **SIZE).cache.skipped
        return seen[threshold]

    low, high = 0.0, DEFAULT_THRESHOLDS[name]
    for _ in range(8):
        if skipped(high) >= target:
            break
        low, high = high, high * 2
    for _ in range(rounds):
        if skipped(high) == target:
            break
        middle = (low + high) / 2
        if skipped(middle) >= target:
            high = middle
        else:
            low = middle
    best = min(seen, key=lambda t: (abs(seen[t] - target), t))
    return best, seen[best], len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=256, help="width (multiple of 128); 768 = medium preset")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 avoids oversubscription on a busy shared machine)")
    parser.add_argument("--match-skips", type=int, default=None,
                        help="forwards every policy skips in the matched rows (default: 40%% of the steps)")
    args = parser.parse_args()
    target = round(0.4 * args.steps) if args.match_skips is None else args.match_skips
    torch.set_num_threads(args.threads)
    model = build_model(args.hidden)
    embeds = build_embeds(model.config)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    c = model.config
    print(f"DiT: hidden {c.hidden_size}, {c.heads} heads, {c.double_blocks} double + {c.single_blocks} single blocks, "
          f"{params:.1f}M parameters; latent {SIZE}; {args.steps} Euler steps; {args.threads} thread(s)")

    names = list(CACHE_POLICIES)
    matched = {}
    for name in names:
        threshold, skipped, runs = matching_threshold(model, embeds, args.steps, name, target)
        matched[name] = threshold
        print(f"search: {name} skips {skipped} of {args.steps} at threshold {threshold:.4g} ({runs} runs)")
    policies = [(f"{name} {DEFAULT_THRESHOLDS[name]:g} (default)", make_cache(name)) for name in names]
    policies += [(f"{name} {matched[name]:.4g} (matched)", make_cache(name, matched[name])) for name in names]
    # No-cache runs before and after the cached ones: their mean is the reference time, their
    # spread shows how noisy the machine was.
    baseline, wall1, cpu1 = run(model, embeds, args.steps, None)
    rows = [(label, policy, *run(model, embeds, args.steps, policy)) for label, policy in policies]
    again, wall2, cpu2 = run(model, embeds, args.steps, None)
    base_wall, base_cpu = (wall1 + wall2) / 2, (cpu1 + cpu2) / 2
    width = max(len(label) for label, _ in policies) + 2
    print(f"\n{'policy':<{width}}{'full fwd':>9}{'skipped':>8}{'wall s':>8}{'wall x':>8}{'cpu s':>8}{'cpu x':>7}"
          f"{'rel L2':>9}")
    print(f"{'no cache':<{width}}{baseline.forwards:>9}{0:>8}{base_wall:>8.1f}{1.0:>7.2f}x{base_cpu:>8.1f}"
          f"{1.0:>6.2f}x{0.0:>9.4f}")
    for label, policy, result, wall, cpu in rows:
        rel_l2 = float((result.latent - baseline.latent).norm() / baseline.latent.norm())
        print(f"{label:<{width}}{result.cache.computed:>9}{result.cache.skipped:>8}{wall:>8.1f}"
              f"{base_wall / wall:>7.2f}x{cpu:>8.1f}{base_cpu / cpu:>6.2f}x{rel_l2:>9.4f}")
    print(f"\nMatched rows: each policy's threshold found so that it skips {target} of {args.steps} forwards "
          "(the closest found when none skips exactly that many).")
    print(f"No-cache runs before/after: wall {wall1:.1f} s / {wall2:.1f} s, cpu {cpu1:.1f} s / {cpu2:.1f} s; "
          f"identical latents: {torch.equal(baseline.latent, again.latent)}.")
    print("Random weights: the relative L2 figures (and how many steps a threshold skips) are indicative "
          "only; a trained checkpoint moves the indicators differently. Wall times on a shared machine are noisy.")


if __name__ == "__main__":
    main()
