"""What a run is asked to do: model files, video and sampling settings, block swap and budget.

Typed and frozen; `validate.py` checks every value before any model loads. One encoding of
"auto" swap (`SwapRequest(mode="auto")`) and one meaning of a budget (`budget_gb`: GiB of the
main device the run may fill; None = the device's total memory) serve the CLI, the nodes and the
route alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InvalidInputError
from ..sampling import SamplingOptions
from .choices import DEFAULTS, SWAP_MODES
from .ranks import ParallelRequest


@dataclass(frozen=True)
class ModelFiles:
    dit: Path
    vae: Path
    llm: Path
    clip: Path
    tokenizer: Path | None = None        # needed for single-file text encoders
    clip_tokenizer: Path | None = None
    loras: tuple[tuple[Path, float], ...] = ()
    vision: Path | None = None           # image-to-video: the LLaVA vision tower (llava folder or clip_vision file)


@dataclass(frozen=True)
class SwapRequest:
    """Block swapping as asked for: off, fixed counts, or auto (the planner picks the least
    swapping that fits the budget for the video being sampled)."""

    mode: str = "off"                     # one of SWAP_MODES
    double: int = 0
    single: int = 0
    offload_txt_in: bool = False
    offload_img_in: bool = False
    prefetch: bool = True

    def __post_init__(self):
        if self.mode not in SWAP_MODES:
            raise InvalidInputError(f"swap: mode {self.mode!r} is not one of {list(SWAP_MODES)}.")
        if self.mode == "fixed" and (self.double < 0 or self.single < 0):
            raise InvalidInputError(f"swap: block counts must be >= 0, got {self.double},{self.single}.")

    @classmethod
    def parse(cls, text: str, parameter: str = "--swap") -> "SwapRequest":
        """'auto', 'off', or 'DOUBLE,SINGLE' (e.g. '10,20'; '0,0' = off)."""
        value = str(text).strip().lower()
        if value in ("auto", "off"):
            return cls(value)
        try:
            double, single = (int(v) for v in value.split(","))
        except ValueError:
            raise InvalidInputError(f"{parameter} {text!r}: give 'DOUBLE,SINGLE' block counts (e.g. 10,20), 'auto' "
                                    "or 'off'.") from None
        if double < 0 or single < 0:
            raise InvalidInputError(f"{parameter} {text!r}: block counts must be >= 0 (or use 'auto').")
        return cls.counts(double, single)

    @classmethod
    def counts(cls, double: int | None, single: int | None, **options) -> "SwapRequest":
        """From widget values: None or a negative count means auto; 0,0 means off."""
        if double is None or single is None or double < 0 or single < 0:
            return cls("auto", **options)
        if double == 0 and single == 0 and not (options.get("offload_txt_in") or options.get("offload_img_in")):
            return cls("off", **options)
        return cls("fixed", int(double), int(single), **options)

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def describe(self) -> str:
        if self.mode == "off":
            return "no block swap"
        counts = "auto" if self.mode == "auto" else f"{self.double} double + {self.single} single blocks"
        extra = [n for n, on in (("txt_in", self.offload_txt_in), ("img_in", self.offload_img_in)) if on]
        return f"block swap {counts}" + (f" (+{', '.join(extra)})" if extra else "")


def check_budget(budget_gb: float | None, parameter: str = "budget_gb") -> float | None:
    """None/0 = the device's total memory; otherwise a positive, finite number of GiB."""
    if budget_gb is None or budget_gb == 0:
        return None
    if not isinstance(budget_gb, (int, float)) or not math.isfinite(budget_gb) or budget_gb < 0:
        raise InvalidInputError(f"{parameter}: {budget_gb!r} GiB; give a positive number (0 = the whole device).")
    return float(budget_gb)


@dataclass(frozen=True)
class CacheRequest:
    name: str = DEFAULTS.cache            # none | one of choices.CACHE_NAMES
    threshold: float | None = None        # None: the policy's default
    start_step: int = 0
    end_step: int | None = None
    storage: str = "main"
    options: tuple = ()                   # the policy's own knobs as (keyword, value) pairs (cache.POLICY_OPTIONS)

    def build(self):
        from ..sampling.cache import make_cache
        return make_cache(self.name, self.threshold, self.start_step, self.end_step, self.storage,
                          **dict(self.options))

    def describe(self) -> str:
        if self.name == "none":
            return "no cache"
        window = f"steps {self.start_step}..{'end' if self.end_step is None else self.end_step}"
        threshold = "default" if self.threshold is None else f"{self.threshold:g}"
        extra = "".join(f", {k} {v}" for k, v in self.options)
        return f"{self.name} threshold {threshold}{extra}, {window}, residuals on {self.storage}"


@dataclass(frozen=True)
class GenerateSettings:
    prompt: str
    output: Path
    negative_prompt: str | None = None   # used with cfg_scale > 1 (default: the official negative)
    width: int = DEFAULTS.width
    height: int = DEFAULTS.height
    frames: int = DEFAULTS.frames
    sampling: SamplingOptions = SamplingOptions()
    weight_format: str = DEFAULTS.weight_format
    attention: str = DEFAULTS.attention
    swap: SwapRequest = SwapRequest()
    budget_gb: float | None = None       # GiB of the main device this run may fill (None: all of it)
    cache: CacheRequest = CacheRequest()
    tiling: str = DEFAULTS.vae_tiling    # VAE decode tiling: auto | off
    fps: float = DEFAULTS.fps
    crf: int | None = None
    device: str = "auto"
    dtype: torch.dtype | None = None     # DiT compute dtype (default bf16 on CUDA, fp32 on CPU)
    parallel: ParallelRequest = ParallelRequest()   # several processes under torchrun
    image: Path | None = None            # image-to-video: the first frame (png, jpg, webp, ...)
    i2v_mode: str = "auto"               # conditioning.I2V_MODES; auto: from the DiT's input channels
    i2v_stability: bool = True           # start from 0.999 noise + 0.001 image latent (shift 7; dynamic: 17)


@dataclass
class StageTime:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class GenerateResult:
    path: Path | None                    # None on the ranks other than 0 of a parallel run
    frames: int
    size: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    stages: list[StageTime] = field(default_factory=list)
    peak_bytes: int | None = None        # peak main-device memory (CUDA), or peak RSS on a CPU

    def summary(self) -> str:
        """The one line a run ends with."""
        stages = ", ".join(f"{s.name} {s.seconds:.1f}s" for s in self.stages)
        peak = "" if self.peak_bytes is None else f", peak memory {self.peak_bytes / 2**30:.2f} GiB"
        size = self.path.stat().st_size if self.path is not None and self.path.exists() else 0
        return (f"wrote {self.path} ({size / 2**20:.2f} MiB, {self.frames} frames of {self.size[0]}x{self.size[1]}); "
                f"{stages}{peak}")
