"""Text to video file in one call: check everything, then encode, sample, decode and write.

Each stage loads its model, runs, and lets it go before the next one loads, so a 24 GB GPU
holds one large model at a time: text encoders -> DiT (optionally block-swapped) -> VAE.
The nodes call the same stages (stages.py) one node at a time. Under torchrun (ranks.py) every
rank runs this same path with the parallel policy on its DiT; rank 0 reports and writes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import CancelledError
from ..runtime.devices import is_cuda, main_device, release_memory
from ..sampling import DEFAULT_NEGATIVE_PROMPT, SamplingHooks
from .ranks import start_ranks, stop_ranks
from .report import Reporter, StageClock, peak_memory, rate
from .settings import GenerateResult, GenerateSettings, ModelFiles
from .stages import LocalHost, decode_latent, encode_prompts, sample_video
from .validate import CheckedRun, check_run


def generate(files: ModelFiles, settings: GenerateSettings, *, reporter: Reporter | None = None,
             cancelled: Callable[[], bool] | None = None) -> GenerateResult:
    """Check every option and file (no model loads before that), then run; returns where it went."""
    return run_checked(check_run(files, settings), reporter=reporter, cancelled=cancelled)


def run_checked(checked: CheckedRun, *, reporter: Reporter | None = None,
                cancelled: Callable[[], bool] | None = None) -> GenerateResult:
    """A run whose request `check_run` accepted (the CLI prints its header in between)."""
    parallel = checked.settings.parallel
    ranks = start_ranks(parallel, checked.settings.device) if parallel.active else None
    try:
        leader = ranks is None or ranks.leader
        clock = StageClock(reporter if leader else None)
        for note in checked.notes:
            clock.note(note)
        device = ranks.device if ranks is not None else main_device(checked.settings.device)
        if is_cuda(device):
            torch.cuda.reset_peak_memory_stats(device)
        embeds = _encode(checked, device, clock)
        latent = _sample(checked, embeds, device, clock, cancelled)
        video = _decode(checked, latent, device, clock)
        if not leader:
            return GenerateResult(None, 0, (checked.settings.width, checked.settings.height), clock.notes,
                                  clock.stages, peak_memory(device))
        path, frames = _write(checked, video, clock, cancelled)
        return GenerateResult(path, frames.shape[0], (frames.shape[2], frames.shape[1]), clock.notes, clock.stages,
                              peak_memory(device))
    finally:
        if ranks is not None:
            stop_ranks()


def _load_timed(clock: StageClock, paths, load):
    start = time.perf_counter()
    loaded = load()
    clock.detail(rate(sum(_size(p) for p in paths if p is not None), time.perf_counter() - start))
    return loaded


def _encode(checked: CheckedRun, device, clock: StageClock):
    from ..text.loader import load_text_encoder
    from ..text.templates import template_for_frames

    files, s = checked.files, checked.settings
    with clock.stage("loading text encoders"):
        encoder = _load_timed(clock, (files.llm, files.clip), lambda: load_text_encoder(
            files.llm, files.clip, files.tokenizer, files.clip_tokenizer, device=device))
    negative = (s.negative_prompt or DEFAULT_NEGATIVE_PROMPT) if s.sampling.cfg_scale > 1 else None
    with clock.stage("text encoding"):
        embeds = encode_prompts(encoder, s.prompt, negative, template_for_frames(s.frames))
    for note in embeds.notes:
        clock.note(note)
    del encoder
    release_memory(device)
    return embeds


def _sample(checked: CheckedRun, embeds, device, clock: StageClock, cancelled) -> torch.Tensor:
    from ..lora import LoraSpec, load_lora
    from .dit import load_dit

    files, s = checked.files, checked.settings
    dtype = s.dtype or (torch.bfloat16 if is_cuda(device) else torch.float32)
    with clock.stage("loading DiT"):
        dit = _load_timed(clock, (files.dit,), lambda: load_dit(
            files.dit, dtype=dtype, weight_format=s.weight_format, attention=s.attention, main=device,
            offload=torch.device("cpu"), swapping=s.swap.active))
        loras = tuple(LoraSpec(load_lora(path), strength) for path, strength in files.loras)
    clock.note(dit.summary)
    hooks = SamplingHooks(progress=clock.progress, cancelled=cancelled)
    policy = _parallel_policy(checked, dit, loras) if s.parallel.world_size > 1 else None
    if policy is not None:
        clock.note(s.parallel.describe())
    try:
        with clock.stage("sampling", total=s.sampling.steps, unit="step"):
            outcome = sample_video(dit, embeds, s.sampling, size=(s.width, s.height, s.frames), loras=loras,
                                   cache=s.cache.build(), hooks=hooks, swap=s.swap, budget_gb=s.budget_gb,
                                   host=LocalHost(device))
            clock.detail(f"{outcome.result.forwards} model calls")
    finally:
        if policy is not None:
            policy.remove()
        dit.unload()
        del dit
        release_memory(device)
    for note in outcome.notes:
        clock.note(note)
    return outcome.result.latent


def _decode(checked: CheckedRun, latent: torch.Tensor, device, clock: StageClock) -> torch.Tensor:
    from ..vae.loader import load_vae

    files, s = checked.files, checked.settings
    with clock.stage("loading VAE"):
        vae = _load_timed(clock, (files.vae,), lambda: load_vae(
            files.vae, device="cpu", dtype=None if is_cuda(device) else torch.float32))
    try:
        with clock.stage("decoding", unit="tile"):
            if s.parallel.vae_parallel:
                return _decode_parallel(vae, latent, s.tiling, device, clock)
            outcome = decode_latent(vae, latent, "auto" if s.tiling == "auto" else None, main=device,
                                    offload=torch.device("cpu"), progress=clock.progress)
            clock.detail(outcome.description)
    finally:
        del vae
        release_memory(device)
    return outcome.video


def _parallel_policy(checked: CheckedRun, dit, loras):
    """The DiT's sequence / CFG parallel policy, after every rank showed it has the same model and run."""
    from ..parallel import ParallelConfig, ParallelPolicy
    from .ranks import COLLECTIVE_TIMEOUT

    s, files = checked.settings, checked.files
    request = s.parallel
    policy = ParallelPolicy(ParallelConfig(request.ulysses_degree, request.ring_degree, request.cfg_parallel),
                            timeout=COLLECTIVE_TIMEOUT)
    identity = "|".join([str(files.dit), str(_size(files.dit)), s.weight_format,
                         *(f"{path}:{strength}" for path, strength in files.loras)])
    policy.install(dit.transformer, identity=identity)
    policy.check_same("the run's settings", repr((s.prompt, s.negative_prompt, s.width, s.height, s.frames,
                                                   s.sampling, s.cache, s.swap)))
    return policy


def _decode_parallel(vae, latent: torch.Tensor, tiling: str, device, clock: StageClock):
    """The decode's tiles spread over the ranks; the video on rank 0, None on the others."""
    from ..parallel.vae_decode import decode_parallel
    from ..vae.tile_choice import choose_decode_tiles
    from .ranks import broadcast_from_leader
    from .stages import vae_visit

    with vae_visit(vae, device, torch.device("cpu")):
        tiles = broadcast_from_leader(choose_decode_tiles(vae, latent.shape)[0] if tiling == "auto" else None)
        video = decode_parallel(vae, latent, tiles, output_device="cpu", progress=clock.progress)
    clock.detail(f"parallel decode, {'one pass' if tiles is None else tiles.describe()}")
    return video


def _write(checked: CheckedRun, video: torch.Tensor, clock: StageClock, cancelled):
    from ..vae.images import video_to_images
    from ..video import write_video

    s = checked.settings
    frames = video_to_images(video)
    with clock.stage("writing", total=frames.shape[0], unit="frame"):
        path = write_video(frames, s.output, fps=s.fps, crf=s.crf,
                           should_stop=(lambda: _raise_if(cancelled)) if cancelled else None)
    return Path(path), frames


def _size(path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def _raise_if(cancelled: Callable[[], bool]) -> None:
    if cancelled():
        raise CancelledError("Video writing cancelled; no file was left behind.")

