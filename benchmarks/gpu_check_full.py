"""Section 2b: the whole 60-block random 13B through the sampling loop, at fewer frames.

A full step at 960x544x129 is ~10 s on an H100, so the whole-model figures run at
`settings.full_size` (960x544x33, ~1 s a step) where every configuration fits the time budget:
- the measured step against the per-stage extrapolation of gpu_check_dit (same formula);
- no swap vs all 20 + 40 blocks swapped with prefetch: step time ratio, and each run's peak
  (torch.cuda.max_memory_allocated over one whole sampling call) against the planner's
  prediction for the same settings (`plan(plan_for_model(...))`: the model's exact weight table);
- TeaCache 0.15 over `teacache_steps` steps vs no cache: forwards skipped, wall ratio (random
  weights: how many steps skip is indicative only).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gpu_check_common import PeakMemory, Settings, compare_memory, MemoryComparison, release, sync
from gpu_check_dit import forward_inputs, load_random, model_shapes, plain_format, time_stages
from hyvideo_core.runtime.block_swap import BlockSwap
from hyvideo_core.runtime.placement import module_bytes
from hyvideo_core.runtime.planner import plan, plan_for_model
from hyvideo_core.sampling import PromptPair, PromptTensors, SamplingOptions, TeaCache, sample


@dataclass
class SamplingRun:
    label: str
    steps: int
    seconds: float
    step_s: float
    peak: MemoryComparison | None = None
    above_weights: MemoryComparison | None = None   # peak minus the weights resident on the device


@dataclass
class SwapFigures:
    double: int
    single: int
    install_s: float            # capture (host copies, pinned on CUDA) + slot allocation
    prefetched_hits: int
    fetches: int
    gib_copied_per_step: float
    time_ratio: float           # swapped step / resident step


@dataclass
class TeaCacheFigures:
    threshold: float
    steps: int
    computed: int
    skipped: int
    wall_ratio: float           # cached / uncached wall time
    rel_l2_vs_uncached: float


def embeds_for(config, text_tokens: int, device, dtype) -> PromptPair:
    g = torch.Generator(device).manual_seed(2)
    text = torch.randn(1, text_tokens, config.text_dim, generator=g, device=device, dtype=dtype)
    pooled = torch.randn(1, config.pooled_text_dim, generator=g, device=device, dtype=dtype)
    return PromptPair(PromptTensors(text, torch.ones(1, text_tokens, dtype=torch.long, device=device), pooled))


def run_full_section(settings: Settings, device: torch.device, result) -> None:
    shapes = model_shapes(settings.dit_config)
    _, dtype = plain_format(device)
    size = settings.full_size
    t0 = time.perf_counter()
    model = load_random(shapes.shapes, device)
    result.data["load_s"] = time.perf_counter() - t0
    result.data["size"] = size.label
    result.data["blocks"] = len(model.blocks)
    weights = module_bytes(model)
    result.data["weights_gib"] = weights / 2**30
    embeds = embeds_for(model.config, settings.text_tokens, device, dtype)
    c = model.config
    common = dict(width=size.width, height=size.height, frames=size.frames, attention="sdpa",
                  text_tokens=settings.text_tokens)
    resident_plan = plan(plan_for_model(model, **common))
    swap_plan = plan(plan_for_model(model, swap_double=c.double_blocks, swap_single=c.single_blocks, **common))

    def sampled(label: str, steps: int, placed_weights: int = weights, predicted=None):
        with PeakMemory(device) as peak:   # the warm-up call gives the peak of a whole sampling call
            sample(model, embeds, SamplingOptions(steps=1, seed=0), cache=None, device=device, **_wh(size))
        t1 = time.perf_counter()
        out = sample(model, embeds, SamplingOptions(steps=steps, seed=0), device=device, **_wh(size))
        sync(device)
        seconds = time.perf_counter() - t1
        run = SamplingRun(label, steps, seconds, seconds / steps)
        if predicted is not None:
            total = above = peak.peak
            if peak.peak is not None:   # CUDA: the peak counts the weights; the CPU figure is above them
                total, above = ((peak.peak, peak.peak - placed_weights) if peak.includes_resident
                                else (peak.peak + placed_weights, peak.peak))
            run.peak = compare_memory(f"{label}: sampling peak", total, predicted.sampling_peak, peak.method)
            run.above_weights = compare_memory(
                f"{label}: peak above resident weights", above,
                predicted.sampling_peak - predicted.breakdown["DiT weights (resident)"], peak.method)
        return run, out

    resident, _ = sampled("no swap", settings.full_steps, predicted=resident_plan)
    result.data["resident"] = resident
    inputs = forward_inputs(c, size, settings.text_tokens, device, dtype)
    stages = time_stages(model, inputs, size, c.double_blocks, c.single_blocks, device,
                         settings.warmup, settings.repeats)
    del inputs
    result.data["extrapolation_check"] = {"stages": stages, "measured_step_s": resident.step_s,
                                          "measured_over_extrapolated": resident.step_s / stages.step_s}
    if settings.teacache_steps:
        result.data["teacache"] = _teacache(model, embeds, size, settings, device)
    else:
        result.notes.append("TeaCache not measured in this mode")
    release(device)
    # last: swapping moves the blocks to host memory; the model is dropped afterwards
    swap = BlockSwap(c.double_blocks, c.single_blocks, main=device, prefetch=True,
                     simulate=device.type != "cuda")   # CPU dry run: the slot mechanism, synchronous copies
    t1 = time.perf_counter()
    swap.install(model)
    install_s = time.perf_counter() - t1
    release(device)
    resident_after = sum(t.numel() * t.element_size() for t in _device_tensors(model, device))
    swapped, _ = sampled("swap all", settings.full_steps, placed_weights=resident_after, predicted=swap_plan)
    per_step = swap.stats.bytes_copied / (settings.full_steps + 1)   # the warm-up step and the timed ones
    result.data["swapped"] = swapped
    result.data["swap"] = SwapFigures(c.double_blocks, c.single_blocks, install_s, swap.stats.prefetched_hits,
                                      swap.stats.fetches, per_step / 2**30, swapped.step_s / resident.step_s)
    swap.remove()
    if swap.report is not None and not swap.report.moves:
        result.notes.append("block swap: main and offload are the same device")


def _teacache(model, embeds, size, settings: Settings, device) -> TeaCacheFigures:
    steps = settings.teacache_steps
    options = SamplingOptions(steps=steps, seed=0)
    sample(model, embeds, SamplingOptions(steps=1, seed=0), device=device, **_wh(size))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    plain = sample(model, embeds, options, device=device, **_wh(size))
    sync(device)
    base = time.perf_counter() - t0
    policy = TeaCache(threshold=0.15)
    t0 = time.perf_counter()
    cached = sample(model, embeds, options, cache=policy, device=device, **_wh(size))
    sync(device)
    wall = time.perf_counter() - t0
    rel = float((cached.latent - plain.latent).norm() / plain.latent.norm())
    return TeaCacheFigures(0.15, steps, cached.cache.computed, cached.cache.skipped, wall / base, rel)


def _wh(size) -> dict:
    return {"width": size.width, "height": size.height, "frames": size.frames}


def _device_tensors(model, device):
    """Tensors of the model stored on the main device (what stays resident under block swap)."""
    seen = set()
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == device.type and id(t) not in seen:
            seen.add(id(t))
            yield t
