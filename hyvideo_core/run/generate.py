"""Text to video file in one call: check everything, then encode, sample, decode and write.

Each stage loads its model, runs, and lets it go before the next one loads, so a 24 GB GPU
holds one large model at a time: text encoders -> DiT (optionally block-swapped) -> VAE.
The nodes call the same stages (stages.py) one node at a time. Under torchrun (ranks.py) every
rank runs this same path with the parallel policy on its DiT; rank 0 reports and writes.

Image-to-video (`settings.image`): the mode comes from the DiT file's input channels (its header
only) unless given; the text is encoded with the image (the vision tower, `files.vision`; without
one, text only, with a note); the VAE encodes the first frame before the DiT loads, and visits
again for the decode, which drops the frames the reference drops (latent_concat: the first 4).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import CancelledError, InvalidInputError
from ..runtime.devices import is_cuda, main_device, release_memory
from ..sampling import DEFAULT_NEGATIVE_PROMPT, SamplingHooks
from .ranks import start_ranks, stop_ranks
from .report import Reporter, StageClock, peak_memory, rate
from .settings import GenerateResult, GenerateSettings, ModelFiles
from .stages import LocalHost, decode_latent, encode_first_frame, encode_prompts, sample_video
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
        mode = _i2v_mode(checked) if checked.settings.image is not None else None
        embeds = _encode(checked, device, clock, mode)
        image = _encode_image(checked, mode, device, clock) if mode is not None else None
        latent, drop = _sample(checked, embeds, device, clock, cancelled, image)
        video = _decode(checked, latent, device, clock)
        if drop and video is not None:
            video = video[:, :, drop:]
            clock.note(f"dropped the first {drop} decoded frames (latent_concat image-to-video, as the reference)")
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


def _i2v_mode(checked: CheckedRun) -> str:
    """The I2V mode: as given, or from the DiT file's patch-embed input channels (header only)."""
    from ..conditioning.image import mode_for_channels

    s = checked.settings
    channels = _dit_input_channels(checked.files.dit)
    if channels is None:
        if s.i2v_mode == "auto":
            raise InvalidInputError(
                f"--image: could not read the input channels of {checked.files.dit} from its header; give "
                "--i2v-mode token_replace, latent_concat or skyreels.")
        return s.i2v_mode
    return mode_for_channels(channels, s.i2v_mode, f"--dit {checked.files.dit}")


def _dit_input_channels(path) -> int | None:
    from ..weights.reader import open_tensors
    try:
        source = open_tensors(path)
    except Exception:        # the loader names a bad file; here only the mode is wanted
        return None
    try:
        for key in source.keys():
            if key.endswith(("img_in.proj.weight", "x_embedder.proj.weight")) and len(source.shape(key)) == 5:
                return int(source.shape(key)[1])
        return None
    finally:
        source.close()


def _encode(checked: CheckedRun, device, clock: StageClock, mode: str | None = None):
    from ..conditioning.image import text_interleave
    from ..text.loader import load_text_encoder
    from ..text.templates import template_for_frames
    from .validate import read_image

    files, s = checked.files, checked.settings
    interleave = text_interleave(mode) if mode is not None else None
    vision = files.vision if interleave is not None else None
    if interleave is not None and vision is None:
        clock.note("--image: no vision tower (--vision), so the prompt is encoded as text only, without the image "
                   "tokens HunyuanVideo-I2V was trained with; the image still conditions the latent")
    if mode == "skyreels":
        clock.note("SkyReels-V1 I2V: the prompt is encoded with the text-only T2V template (as diffusers does)")
    with clock.stage("loading text encoders"):
        encoder = _load_timed(clock, (files.llm, files.clip, vision), lambda: load_text_encoder(
            files.llm, files.clip, files.tokenizer, files.clip_tokenizer, device=device, vision=vision))
    negative = (s.negative_prompt or DEFAULT_NEGATIVE_PROMPT) if s.sampling.cfg_scale > 1 else None
    image = read_image(s.image) if vision is not None else None
    with clock.stage("text encoding"):
        embeds = encode_prompts(encoder, s.prompt, negative, template_for_frames(s.frames), image=image,
                                image_embed_interleave=interleave or 1)
    for note in embeds.notes:
        clock.note(note)
    del encoder
    release_memory(device)
    return embeds


def _encode_image(checked: CheckedRun, mode: str, device, clock: StageClock):
    """The first frame fitted to the video size and VAE-encoded (the VAE lets go before the DiT loads)."""
    from ..vae.loader import load_vae
    from .validate import read_image

    files, s = checked.files, checked.settings
    with clock.stage("loading VAE"):
        vae = _load_timed(clock, (files.vae,), lambda: load_vae(
            files.vae, device="cpu", dtype=None if is_cuda(device) else torch.float32))
    try:
        with clock.stage("encoding image"):
            image = encode_first_frame(vae, read_image(s.image), s.width, s.height, mode, s.i2v_stability,
                                       main=device, offload=torch.device("cpu"),
                                       tiling="auto" if s.tiling == "auto" else None)
            clock.detail(f"{mode}, {'stability' if s.i2v_stability else 'dynamic'}")
    finally:
        del vae
        release_memory(device)
    for note in image.notes:
        clock.note(note)
    return image


def _sample(checked: CheckedRun, embeds, device, clock: StageClock, cancelled, image=None):
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
                                   host=LocalHost(device), image=image)
            clock.detail(f"{outcome.result.forwards} model calls")
    finally:
        if policy is not None:
            policy.remove()
        dit.unload()
        del dit
        release_memory(device)
    for note in outcome.notes:
        clock.note(note)
    return outcome.result.latent, outcome.result.drop_leading_frames


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

