"""What every part of the GPU check shares: the run's settings per mode, the section result, the
time guard, timing and peak-memory helpers, and the JSON writer.

Imports only the standard library and torch: the check must start on a bare CUDA machine.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import importlib.util
import json
import math
import mmap
import os
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

GiB = 2**30
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Size:
    """A video size in pixels and frames (the planner's and the sampler's units)."""

    width: int
    height: int
    frames: int

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"

    @property
    def latent(self) -> tuple[int, int, int]:
        """[T, h, w] of the raw latent (4x temporal, 8x spatial compression)."""
        return (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8


@dataclass(frozen=True)
class Settings:
    """Everything a mode decides: shapes, step counts and time limits.

    The default (full) mode must finish in 5 minutes on one H100/H200. A 13B forward at
    1280x720x129 takes ~30-40 s there, so the per-resolution figures time one double and one
    single block of the real width at the real token count and extrapolate to 20 + 40 blocks
    (`dit_blocks`); whole-model runs (block swap, TeaCache, the extrapolation check) use fewer
    frames (`full_size`)."""

    mode: str                       # "full" | "quick" | "dry-run"
    device: str                     # "cuda" | "cpu"
    dit_config: str                 # "13b" (official shapes) | "tiny"
    block_sizes: tuple[Size, ...]   # sizes of the per-block timings
    warmup: int
    repeats: int
    variants: tuple[str, ...]       # DiT storage/attention variants timed per block
    compile_size: Size | None       # None: torch.compile not measured
    compile_backend: str            # "inductor" on CUDA; "eager" in the dry run (no compiler needed)
    full_size: Size                 # whole-model runs: swap, planner, TeaCache, extrapolation check
    full_steps: int                 # timed sampling steps per whole-model configuration
    teacache_steps: int             # 0: TeaCache not measured
    vae_config: str                 # "884-16c-hy" | "tiny"
    vae_tiled_size: Size
    vae_small_size: Size            # untiled vs tiled
    vae_tiles: tuple[int, int]      # (pixels, frames) of the tiled decodes: the planner's defaults on CUDA
    vae_time_box_s: float           # the tiled 720p decode stops (and extrapolates) after this
    gemm_size: int
    parallel_config: str            # DiT preset of the parallel run
    parallel_size: Size
    time_limit_s: float             # global guard: remaining sections are skipped past it
    text_tokens: int = 256          # SPEC 10.1 counts L = N + 256


FULL_VARIANTS = ("bf16_sdpa", "fp8_scaled", "fp8_fast", "flash", "sage")


def settings_for(mode: str) -> Settings:
    if mode == "dry-run":
        tiny = Size(64, 48, 9)
        return Settings(
            mode, "cpu", "tiny", (tiny, Size(96, 64, 9)), warmup=1, repeats=2, variants=FULL_VARIANTS,
            compile_size=tiny, compile_backend="eager", full_size=tiny, full_steps=2, teacache_steps=10,
            vae_config="tiny", vae_tiled_size=Size(96, 80, 17), vae_small_size=Size(64, 64, 9), vae_tiles=(48, 8),
            vae_time_box_s=20.0, gemm_size=256, parallel_config="tiny", parallel_size=Size(48, 48, 9),
            time_limit_s=120.0, text_tokens=16)
    sizes = (Size(960, 544, 129), Size(1280, 720, 129))
    if mode == "quick":  # ~2 minutes: no compile, no TeaCache, one resolution, one timed swap step
        return Settings(
            mode, "cuda", "13b", sizes[:1], warmup=1, repeats=2, variants=FULL_VARIANTS, compile_size=None,
            compile_backend="inductor", full_size=Size(960, 544, 33), full_steps=1, teacache_steps=0,
            vae_config="884-16c-hy", vae_tiled_size=Size(1280, 720, 129), vae_small_size=Size(512, 512, 33), vae_tiles=(256, 64),
            vae_time_box_s=15.0, gemm_size=8192, parallel_config="medium", parallel_size=Size(960, 544, 33),
            time_limit_s=115.0)
    return Settings(
        mode, "cuda", "13b", sizes, warmup=1, repeats=3, variants=FULL_VARIANTS, compile_size=sizes[0],
        compile_backend="inductor", full_size=Size(960, 544, 33), full_steps=2, teacache_steps=10,
        vae_config="884-16c-hy", vae_tiled_size=Size(1280, 720, 129), vae_small_size=Size(512, 512, 33), vae_tiles=(256, 64),
        vae_time_box_s=40.0, gemm_size=8192, parallel_config="medium", parallel_size=Size(960, 544, 33),
        time_limit_s=285.0)


@dataclass
class SectionResult:
    """One section of the report. `status` is "ok", "error" or "skipped"; `data` holds the
    section's own typed results (dataclasses, converted by `to_jsonable`)."""

    name: str
    status: str = "ok"
    seconds: float = 0.0
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None


class TimeGuard:
    """The global deadline: a section that would not fit in what is left is skipped, with a note."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.start = clock()
        self.limit_s = limit_s

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.limit_s - self.elapsed()

    def allows(self, needs_s: float) -> bool:
        return self.left() >= needs_s


def run_section(name: str, guard: TimeGuard, needs_s: float, body: Callable[[SectionResult], None],
                device: torch.device) -> SectionResult:
    """Run `body(result)`; its exception is recorded in the result, never raised, so one failing
    section does not lose the others. Memory is handed back after every section."""
    result = SectionResult(name)
    if not guard.allows(needs_s):
        result.status = "skipped"
        result.notes.append(f"time guard: {guard.left():.0f} s left of {guard.limit_s:.0f} s, "
                            f"this section needs about {needs_s:.0f} s")
        return result
    t0 = time.perf_counter()
    try:
        body(result)
    except Exception as exc:  # recorded; the next section still runs
        result.status = "error"
        result.error = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
        result.traceback = "".join(traceback.format_exception(exc)[-6:])[-4000:]
    finally:
        result.seconds = round(time.perf_counter() - t0, 3)
        release(device)
    return result


def installed(module: str) -> bool:
    """Whether `module` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):   # a broken or half-installed package counts as absent
        return False


# -- devices, timing, memory -----------------------------------------------------------------------
def release(device: torch.device) -> None:
    """Drop collected tensors and hand cached CUDA blocks back between measurements."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls after `warmup` calls, each synchronised (a call here is at
    least milliseconds of GPU work, so host timing with a sync is accurate enough)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


class PeakMemory:
    """Peak memory of a stretch of code: CUDA's allocator high-water mark on a GPU; on a Linux CPU
    the resident-set high-water mark above the start (/proc/self, reset through clear_refs), which
    only proves the plumbing in the dry run (it misses what was resident before, e.g. weights)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0
        self.method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else _cpu_method()
        # the allocator's peak counts every live tensor; the CPU figure only what came after the start
        self.includes_resident = device.type == "cuda"

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method:
            _reset_high_water_mark()
            self.base = _proc_status("VmRSS:")
        self.peak = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        elif self.method:
            self.peak = max(0, _proc_status("VmHWM:") - self.base)


@functools.cache
def _cpu_method() -> str | None:
    """The CPU method when this kernel supports it: clear_refs must reset the high-water mark and
    VmHWM must follow a fresh, touched 16 MiB mapping (sandboxed kernels may accept the write and
    still report stale figures; then there is no CPU peak rather than a wrong one)."""
    size = 16 * 2**20
    try:
        _reset_high_water_mark()
        base = _proc_status("VmRSS:")
        with touched_mapping(size):
            seen = _proc_status("VmHWM:") - base
    except OSError:
        return None
    return "VmHWM above the start (CPU: plumbing only)" if seen >= 0.75 * size else None


def touched_mapping(size: int) -> mmap.mmap:
    """A fresh anonymous mapping of `size` bytes with every page written, so resident: unlike a
    tensor, it cannot be served from pages an allocator kept after earlier work. Close it (or use
    it in a with statement) to give it back."""
    block = mmap.mmap(-1, size)
    for page in range(0, size, mmap.PAGESIZE):
        block[page] = 1
    return block


def _reset_high_water_mark() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _proc_status(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class MemoryComparison:
    """A measured peak against a prediction for the same settings."""

    what: str
    measured_gib: float | None
    predicted_gib: float
    ratio: float | None        # measured / predicted; > 1 means the planner under-predicts
    method: str | None


def compare_memory(what: str, measured: int | None, predicted: int, method: str | None) -> MemoryComparison:
    ratio = None if measured is None or predicted <= 0 else round(measured / predicted, 4)
    return MemoryComparison(what, None if measured is None else round(measured / GiB, 4),
                            round(predicted / GiB, 4), ratio, method)


# -- JSON ---------------------------------------------------------------------------------------------
def to_jsonable(value):
    """Dataclasses, tuples, dtypes, devices and non-finite floats -> plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    return repr(value)


def write_json(path: Path | str, report) -> Path:
    """Write atomically (a temporary file renamed over the target): an interrupted run never leaves
    half a file where a previous report was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
