"""Text to video file in one call: the composition the CLI (and outside scripts) use.

Each stage loads its model, runs, and lets it go before the next one loads, so a 24 GB GPU
holds one large model at a time: text encoders -> DiT (optionally block-swapped) -> VAE.
The ComfyUI nodes compose the same core calls as separate nodes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .errors import InvalidInputError
from .runtime.devices import is_cuda, main_device, release_memory
from .sampling import DEFAULT_NEGATIVE_PROMPT, FirstBlockCache, SamplingHooks, SamplingOptions, TeaCache, sample

log = logging.getLogger(__name__)

CACHES = ("none", "teacache", "first_block")


@dataclass(frozen=True)
class ModelFiles:
    dit: Path
    vae: Path
    llm: Path
    clip: Path
    tokenizer: Path | None = None        # needed for single-file text encoders
    clip_tokenizer: Path | None = None


@dataclass(frozen=True)
class GenerateSettings:
    prompt: str
    output: Path
    negative_prompt: str | None = None   # used with cfg_scale > 1 (default: the official negative)
    width: int = 1280
    height: int = 720
    frames: int = 129
    sampling: SamplingOptions = SamplingOptions()
    weight_format: str = "auto"
    attention: str = "auto"
    swap: tuple[int, int] | str = (0, 0)  # (double, single) blocks on the offload device, or "auto"
    vram_budget_gb: float | None = None  # for swap="auto" (default: free CUDA memory)
    cache: str = "none"                  # none | teacache | first_block
    cache_threshold: float = 0.15
    tiling: str = "auto"                 # VAE decode tiling: auto | off
    fps: float = 24.0
    crf: int | None = None
    device: str = "auto"
    dtype: torch.dtype | None = None     # DiT compute dtype (default bf16 on CUDA, fp32 on CPU)


@dataclass
class GenerateResult:
    path: Path
    frames: int
    size: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def generate(files: ModelFiles, settings: GenerateSettings, *,
             progress: Callable[[str, int, int], None] | None = None,
             cancelled: Callable[[], bool] | None = None) -> GenerateResult:
    """Encode the prompt, sample, decode and write the video; returns where it went."""
    from .vae.images import video_to_images
    from .video import write_video

    _check(settings)
    device = main_device(settings.device)
    notes: list[str] = []
    embeds = _encode(files, settings, device, notes)
    latent = _sample(files, settings, embeds, device, notes, progress, cancelled)
    video = _decode(files, settings, latent, device, notes)
    frames = video_to_images(video)
    path = write_video(frames, settings.output, fps=settings.fps, crf=settings.crf,
                       should_stop=(lambda: _raise_if(cancelled)) if cancelled else None)
    return GenerateResult(Path(path), frames.shape[0], (frames.shape[2], frames.shape[1]), notes)


def _check(settings: GenerateSettings) -> None:
    """Every option checked before any model loads."""
    from .sampling import plan_latent, plan_schedule
    o = settings.sampling
    plan_schedule(o.steps, o.shift, o.denoise, o.start_step, o.end_step)
    plan_latent(settings.width, settings.height, settings.frames)
    o.guidance.check()
    if settings.cache not in CACHES:
        raise InvalidInputError(f"cache={settings.cache!r}: choose one of {list(CACHES)}.")
    if settings.tiling not in ("auto", "off"):
        raise InvalidInputError(f"tiling={settings.tiling!r}: choose 'auto' or 'off'.")


def _encode(files: ModelFiles, settings: GenerateSettings, device, notes: list[str]):
    from .text.loader import load_text_encoder
    from .text.templates import template_for_frames

    encoder = load_text_encoder(files.llm, files.clip, files.tokenizer, files.clip_tokenizer, device=device)
    negative = None
    if settings.sampling.cfg_scale > 1:
        negative = settings.negative_prompt or DEFAULT_NEGATIVE_PROMPT
    embeds = encoder.encode(settings.prompt, negative_prompt=negative, template=template_for_frames(settings.frames))
    notes.extend(embeds.notes)
    del encoder
    release_memory(device)
    return embeds


def _sample(files, settings: GenerateSettings, embeds, device, notes, progress, cancelled) -> torch.Tensor:
    from .runtime.block_swap import BlockSwap
    from .runtime.oom import oom_guard
    from .runtime.planner import auto_swap, plan_for_model
    from .weights.loader import load_transformer
    from .weights.storage import storage_for

    dtype = settings.dtype or (torch.bfloat16 if is_cuda(device) else torch.float32)
    swapping = settings.swap == "auto" or any(settings.swap)
    model = load_transformer(files.dit, dtype=dtype, device="cpu" if swapping else device,
                             attention=settings.attention, storage=storage_for(settings.weight_format))
    notes.append(model.load_report.summary())
    plan_inputs = plan_for_model(model, width=settings.width, height=settings.height, frames=settings.frames,
                                 cfg_batched=settings.sampling.cfg_scale > 1)
    swap = settings.swap
    if swap == "auto":
        budget = int(settings.vram_budget_gb * 2**30) if settings.vram_budget_gb else None
        swap = auto_swap(plan_inputs, budget=budget, device=device).swap
        notes.append(f"auto block swap: {swap[0]} double + {swap[1]} single blocks offloaded")
    if swapping:
        BlockSwap(*swap, main=device).install(model)
    hooks = SamplingHooks(progress=(lambda done, total: progress("sampling", done, total)) if progress else None,
                          cancelled=cancelled)
    try:
        with oom_guard(plan_inputs.replace(swap_double=swap[0], swap_single=swap[1]) if swapping else plan_inputs,
                       device=device):
            result = sample(model, embeds, settings.sampling, width=settings.width, height=settings.height,
                            frames=settings.frames, cache=_cache(settings), hooks=hooks, device=device)
    finally:
        del model
        release_memory(device)
    notes.extend(result.notes)
    if result.cache is not None:
        notes.append(f"cache: {result.cache.skipped} of {result.cache.skipped + result.cache.computed} steps skipped")
    return result.latent


def _cache(settings: GenerateSettings):
    if settings.cache == "teacache":
        return TeaCache(threshold=settings.cache_threshold)
    if settings.cache == "first_block":
        return FirstBlockCache(threshold=settings.cache_threshold)
    return None


def _decode(files, settings: GenerateSettings, latent: torch.Tensor, device, notes) -> torch.Tensor:
    from .vae.loader import load_vae

    vae = load_vae(files.vae, device=device, dtype=None if is_cuda(device) else torch.float32)
    video = vae.decode(latent, tiling="auto" if settings.tiling == "auto" else None, output_device="cpu")
    report = getattr(vae, "last_decode_report", None)
    if report is not None:
        notes.append(f"VAE decode: {report.describe()}")
    del vae
    release_memory(device)
    return video


def _raise_if(cancelled: Callable[[], bool]) -> None:
    from .errors import CancelledError
    if cancelled():
        raise CancelledError("Video writing cancelled; no file was left behind.")
