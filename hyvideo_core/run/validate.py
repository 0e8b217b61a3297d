"""Everything a run is asked for, checked before any model loads.

A bad size, option, output path or model file is refused in the first seconds, naming what is
wrong, instead of after text encoding and a 50-step sampling run. Sizes are snapped here, once:
the notes say what changed, and everything downstream sees the snapped size (so each warning
is printed once and the header shows the values actually used).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InvalidInputError, finite_number
from ..sampling import LatentPlan, plan_latent, plan_schedule
# Hard upper limits, the same as the nodes' widget limits; defined where the library checks them,
# so `hyvideo_core.sample` refuses the same requests (re-exported here for the CLI and the nodes).
from ..sampling.extras import check_extras
from ..sampling.noise import MAX_FRAMES, MAX_SEED, MAX_SIZE, check_seed
from ..sampling.schedule import MAX_STEPS
from ..video import format_for
from .choices import ATTENTION_BACKENDS, CACHE_NAMES, VAE_TILING, WEIGHT_FORMATS, check_choice, parse_dtype
from .settings import GenerateSettings, ModelFiles, check_budget
from .sniff import SniffedFile, sniff_model_file

MAX_FPS = 240.0   # the Save Video node's widget limit


@dataclass(frozen=True)
class CheckedRun:
    """A run that passed every check: the settings with the snapped size, what was snapped, and
    what each model file turned out to be."""

    files: ModelFiles
    settings: GenerateSettings
    latent: LatentPlan
    sniffed: tuple[SniffedFile, ...]
    notes: tuple[str, ...]


def check_run(files: ModelFiles, settings: GenerateSettings) -> CheckedRun:
    """Options first (no file is opened when they are wrong), then the output path, then the files."""
    latent = check_size(settings.width, settings.height, settings.frames)
    check_options(settings)
    check_output(settings.output, settings.crf)
    sniffed = check_files(files)
    snapped = replace(settings, width=latent.width, height=latent.height, frames=latent.frames)
    return CheckedRun(files, snapped, latent, sniffed, latent.adjustments)


def check_size(width, height, frames, parameters=("--width", "--height", "--frames")) -> LatentPlan:
    """Positive integers within the limits, then snapped to what the model generates."""
    for name, value, limit in zip(parameters, (width, height, frames), (MAX_SIZE, MAX_SIZE, MAX_FRAMES)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise InvalidInputError(f"{name} {value!r}: give a whole number from 1 to {limit}.")
    return plan_latent(width, height, frames)


def check_options(settings: GenerateSettings) -> None:
    o = settings.sampling
    if isinstance(o.steps, bool) or not isinstance(o.steps, int) or not 1 <= o.steps <= MAX_STEPS:
        raise InvalidInputError(f"--steps {o.steps!r}: give a whole number from 1 to {MAX_STEPS}.")
    check_seed(o.seed, "--seed")
    for name, value in (("--shift", o.shift), ("--guidance", o.embedded_guidance), ("--cfg-scale", o.cfg_scale),
                        ("--denoise", o.denoise)):
        finite_number(name, value)
    plan_schedule(o.steps, o.shift, o.denoise, o.start_step, o.end_step)
    o.guidance.check()
    check_extras(o)          # RIFLEx, CFG-Zero*, Enhance-A-Video
    check_choice("--weight-format", settings.weight_format, WEIGHT_FORMATS)
    check_choice("--attention", settings.attention, ATTENTION_BACKENDS)
    check_choice("--tiling", settings.tiling, VAE_TILING)
    check_choice("--cache", settings.cache.name, CACHE_NAMES)
    if settings.cache.threshold is not None:
        finite_number("--cache-threshold", settings.cache.threshold, "0 disables skipping.")
    settings.cache.build()   # validates name, threshold and step window
    check_budget(settings.budget_gb, "--vram-gb")
    if not (isinstance(settings.fps, (int, float)) and math.isfinite(settings.fps) and 0 < settings.fps <= MAX_FPS):
        raise InvalidInputError(f"--fps {settings.fps!r}: must be a positive number up to {MAX_FPS:g}.")
    if not isinstance(settings.prompt, str):
        raise InvalidInputError(f"--prompt: expected text, got {type(settings.prompt).__name__}.")
    if settings.dtype is not None:
        parse_dtype(settings.dtype, "dtype")
    if settings.image is not None:
        from ..conditioning.image import check_mode
        check_mode(settings.i2v_mode, "--i2v-mode")
        read_image(settings.image)           # a bad path or file is refused before any model loads
    elif settings.i2v_mode != "auto":
        raise InvalidInputError(f"--i2v-mode {settings.i2v_mode}: give the first frame with --image.")


def read_image(path, parameter: str = "--image"):
    """An image file -> float tensor [3, H, W] in 0..1 (RGB; alpha dropped)."""
    import torch
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"{parameter} {path}: no such file; give an image file (png, jpg, webp, ...).")
    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{parameter} {path}: not a readable image ({exc}); give a png, jpg or webp "
                                "file.") from None
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(rgb.height, rgb.width, 3)
    return data.permute(2, 0, 1).float() / 255.0


def check_output(path, crf: int | None = None, parameter: str = "--output") -> Path:
    """A supported extension, a CRF in its range, and a folder we can create and write in."""
    path = Path(path)
    fmt = format_for(path)
    if crf is not None and (isinstance(crf, bool) or not isinstance(crf, int)):
        raise InvalidInputError(f"--crf {crf!r}: give a whole number.")
    if crf is not None and (fmt.crf_range is None or not fmt.crf_range[0] <= crf <= fmt.crf_range[1]):
        allowed = "no --crf (gif has none)" if fmt.crf_range is None else f"{fmt.crf_range[0]}-{fmt.crf_range[1]}"
        raise InvalidInputError(f"--crf {crf}: {fmt.name} takes {allowed}.")
    if path.is_dir():
        raise InvalidInputError(f"{parameter} {path}: is a folder; give a file name such as {path / 'video.mp4'}.")
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"{parameter} {path}: {existing} is a file, so the folder {folder} cannot be "
                                "created; choose another output path.")
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_create_in(existing):
        raise InvalidInputError(f"{parameter} {path}: the folder {existing} is not writable; choose another "
                                "output path.")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in `folder` (os.access says yes to root on a read-only mount);
    the probe file is removed at once."""
    import tempfile
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hyvideo-probe-"):
            return True
    except OSError:
        return False


def check_files(files: ModelFiles) -> tuple[SniffedFile, ...]:
    """Every model file sniffed for its kind and format (headers only, no weights read)."""
    sniffed = [sniff_model_file(files.dit, "dit", parameter="--dit"),
               sniff_model_file(files.vae, "vae", parameter="--vae"),
               sniff_model_file(files.llm, "llm", parameter="--llm"),
               sniff_model_file(files.clip, "clip", parameter="--clip")]
    if files.vision is not None and not Path(files.vision).exists():
        raise InvalidInputError(f"--vision {files.vision}: no such file or folder (the llava-llama-3-8b-v1_1-"
                                "transformers folder, or ComfyUI's clip_vision/llava_llama3_vision.safetensors).")
    for name, folder in (("--tokenizer", files.tokenizer), ("--clip-tokenizer", files.clip_tokenizer)):
        if folder is not None and not Path(folder).is_dir():
            raise InvalidInputError(f"{name} {folder}: no such folder (a tokenizer folder with tokenizer.json).")
    for path, strength in files.loras:
        finite_number(f"--lora {path}: strength", strength, "Give PATH:STRENGTH with a finite strength, e.g. 0.8.")
        sniffed.append(sniff_model_file(path, "lora", parameter="--lora"))
    return tuple(sniffed)
