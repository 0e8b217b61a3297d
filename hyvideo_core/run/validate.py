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

from ..errors import InvalidInputError
from ..sampling import LatentPlan, plan_latent, plan_schedule
from ..video import format_for
from .choices import ATTENTION_BACKENDS, VAE_TILING, WEIGHT_FORMATS, check_choice
from .settings import GenerateSettings, ModelFiles, check_budget
from .sniff import SniffedFile, sniff_model_file

# Hard upper limits, the same as the nodes' widget limits.
MAX_SIZE = 4096
MAX_FRAMES = 1025
MAX_STEPS = 1000
MAX_SEED = 2**64 - 1


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
    if isinstance(o.seed, bool) or not isinstance(o.seed, int) or not 0 <= o.seed <= MAX_SEED:
        raise InvalidInputError(f"--seed {o.seed!r}: give a whole number from 0 to 2**64-1.")
    for name, value in (("--shift", o.shift), ("--guidance", o.embedded_guidance), ("--cfg-scale", o.cfg_scale)):
        if not math.isfinite(value):
            raise InvalidInputError(f"{name} {value!r}: must be a finite number.")
    plan_schedule(o.steps, o.shift, o.denoise, o.start_step, o.end_step)
    o.guidance.check()
    check_choice("--weight-format", settings.weight_format, WEIGHT_FORMATS)
    check_choice("--attention", settings.attention, ATTENTION_BACKENDS)
    check_choice("--tiling", settings.tiling, VAE_TILING)
    settings.cache.build()   # validates name, threshold and step window
    check_budget(settings.budget_gb, "--vram-gb")
    if not (isinstance(settings.fps, (int, float)) and math.isfinite(settings.fps) and settings.fps > 0):
        raise InvalidInputError(f"--fps {settings.fps!r}: must be a positive number.")


def check_output(path, crf: int | None = None, parameter: str = "--output") -> Path:
    """A supported extension, a CRF in its range, and a folder we can create and write in."""
    path = Path(path)
    fmt = format_for(path)
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
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{parameter} {path}: the folder {existing} is not writable; choose another "
                                "output path.")
    return path


def check_files(files: ModelFiles) -> tuple[SniffedFile, ...]:
    """Every model file sniffed for its kind and format (headers only, no weights read)."""
    sniffed = [sniff_model_file(files.dit, "dit", parameter="--dit"),
               sniff_model_file(files.vae, "vae", parameter="--vae"),
               sniff_model_file(files.llm, "llm", parameter="--llm"),
               sniff_model_file(files.clip, "clip", parameter="--clip")]
    for name, folder in (("--tokenizer", files.tokenizer), ("--clip-tokenizer", files.clip_tokenizer)):
        if folder is not None and not Path(folder).is_dir():
            raise InvalidInputError(f"{name} {folder}: no such folder (a tokenizer folder with tokenizer.json).")
    for path, strength in files.loras:
        if not math.isfinite(strength):
            raise InvalidInputError(f"--lora {path}: strength {strength!r} must be a finite number.")
        sniffed.append(sniff_model_file(path, "lora", parameter="--lora"))
    return tuple(sniffed)
