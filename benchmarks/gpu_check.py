"""One prepared GPU check: every CUDA path of the engine and the real-size figures, in one command.

    python benchmarks/gpu_check.py              # the default run: under 5 minutes on one H100/H200
    python benchmarks/gpu_check.py --quick      # about 2 minutes: one resolution, no compile/TeaCache
    python benchmarks/gpu_check.py --dry-run    # every step on the CPU with tiny shapes (CI)
    python benchmarks/gpu_check.py --json out.json   # default: gpu_check.json

Sections (each records its own error in the JSON, so one failure does not lose the others; a
global time guard skips what would not fit, with a note):
1. tests: the suite's CUDA-only tests (`pytest -m cuda`, counts from JUnit XML);
2. gemm + dit_blocks: the bf16 GEMM rate (and fp8 `_scaled_mm`'s), then the 13B's shapes with
   random weights built on the GPU by the engine's loader: per resolution (960x544x129,
   1280x720x129) and variant (bf16 + sdpa, fp8 storage, fp8 fast matmul, flash, sage: "not
   installed" when absent) one double and one single block are timed and the step EXTRAPOLATED
   to 20 + 40 blocks (a full 720p step is ~30-40 s: too long to repeat here); achieved FLOP/s
   against SPEC 10.1's count as a fraction of the GEMM rate; torch.compile of the blocks;
3. dit_full: the whole 60-block model through the sampling loop at 960x544x33 (fewer frames,
   so that it fits): measured step vs the extrapolation, all blocks swapped with prefetch vs
   none (time ratio; peaks vs the planner's predictions), TeaCache 0.15 over 10 steps;
4. vae: the real-config VAE (random weights), tiled 720p x 129 decode (time-boxed, then
   extrapolated from the tiles done) and untiled vs tiled at 512x512x33, peaks vs predictions;
5. parallel: 2-rank NCCL Ulysses vs one process when 2 GPUs are visible (skipped on one).
Median of a few steps after one warm-up everywhere. Random weights: TeaCache skip counts and
fp8 errors are indicative only. Needs only torch, safetensors, einops, transformers, numpy
and this repository; pytest for section 1. Without CUDA (and without --dry-run) it stops at once.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):   # the engine and the sibling gpu_check_* modules
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from gpu_check_common import (SectionResult, Settings, TimeGuard, installed, run_section, settings_for,  # noqa: E402
                              write_json)

NO_CUDA_EXIT = 2
OPTIONAL = ("pytest", "gguf", "diffusers", "imageio", "imageio_ffmpeg", "psutil", "flash_attn", "sageattention")


def no_cuda_message() -> str | None:
    """Why the real check cannot run here, or None when a CUDA GPU is usable."""
    if torch.cuda.is_available():
        return None
    build = torch.version.cuda
    why = "this torch build has no CUDA" if build is None else f"torch (CUDA {build}) sees no CUDA device"
    return (f"gpu_check: {why}, and this check measures the GPU. Run it on a CUDA machine, or pass "
            "--dry-run to go through every step on the CPU with tiny shapes.")


def environment(settings: Settings, device: torch.device) -> dict:
    env = {"mode": settings.mode, "device": str(device), "python": platform.python_version(),
           "torch": torch.__version__, "cuda_build": torch.version.cuda, "time_limit_s": settings.time_limit_s,
           "packages": {name: _version(name) for name in OPTIONAL}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=list(torch.cuda.get_device_capability(device)),
                   gpu_memory_gib=round(props.total_memory / 2**30, 2), gpus_visible=torch.cuda.device_count())
    return env


def _version(module: str) -> str:
    if not installed(module):
        return "absent"
    dist = {"flash_attn": "flash-attn", "imageio_ffmpeg": "imageio-ffmpeg"}.get(module, module)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "present (version unknown)"


def run_all(settings: Settings, device: torch.device, only: set[str] | None = None) -> dict:
    # imported here, after the CUDA check: a machine without CUDA fails before loading the engine
    from gpu_check_flops import fp8_gemm_rate, gemm_rate
    from gpu_check_tests import run_cuda_tests
    guard = TimeGuard(settings.time_limit_s)
    sections: dict[str, SectionResult] = {}
    gemm = {"bf16": None}

    def tests(r):
        r.data["run"] = run_cuda_tests(timeout_s=max(30.0, min(150.0, guard.left() - 120.0)))
        if settings.mode == "dry-run":
            r.notes.append("CPU: the marked tests skip themselves (skipif no CUDA)")

    def gemm_section(r):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        gemm["bf16"] = gemm_rate(device, settings.gemm_size, dtype)
        r.data["plain"] = gemm["bf16"]
        r.data["fp8_scaled_mm"] = fp8_gemm_rate(device, settings.gemm_size)

    def dit_blocks(r):
        from gpu_check_dit import run_blocks_section
        rate = gemm["bf16"].flops_per_s if gemm["bf16"] else float("nan")
        run_blocks_section(settings, device, rate, r)

    def dit_full(r):
        from gpu_check_full import run_full_section
        run_full_section(settings, device, r)

    def vae(r):
        from gpu_check_vae import run_vae_section
        run_vae_section(settings, device, guard, r)

    def parallel(r):
        from gpu_check_parallel import run_parallel_section
        run_parallel_section(settings, device, guard, r)

    # (name, body, seconds it needs at least: the guard skips it with less left)
    plan = [("tests", tests, 15), ("gemm", gemm_section, 3), ("dit_blocks", dit_blocks, 40),
            ("dit_full", dit_full, 45), ("vae", vae, 25), ("parallel", parallel, 15)]
    for name, body, needs in plan:
        if only and name not in only:
            continue
        print(f"[gpu_check] {name} ... ({guard.elapsed():.0f} s elapsed)", file=sys.stderr, flush=True)
        sections[name] = run_section(name, guard, needs if settings.mode != "dry-run" else 0, body, device)
        s = sections[name]
        print(f"[gpu_check] {name}: {s.status} in {s.seconds:.1f} s" + (f" ({s.error})" if s.error else ""),
              file=sys.stderr, flush=True)
    return {"environment": environment(settings, device), "wall_s": round(guard.elapsed(), 2),
            "sections": sections}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the ~2-minute subset")
    mode.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny shapes")
    parser.add_argument("--json", default="gpu_check.json", help="where the report goes (default: %(default)s)")
    parser.add_argument("--only", default=None, help="comma-separated sections to run (default: all)")
    args = parser.parse_args(argv)
    if not args.dry_run:
        message = no_cuda_message()
        if message:
            print(message, file=sys.stderr)
            return NO_CUDA_EXIT
    settings = settings_for("dry-run" if args.dry_run else "quick" if args.quick else "full")
    device = torch.device("cuda", torch.cuda.current_device()) if settings.device == "cuda" else torch.device("cpu")
    only = set(args.only.split(",")) if args.only else None
    t0 = time.perf_counter()
    report = run_all(settings, device, only)
    from gpu_check_summary import print_table, summary_rows
    report["summary"] = summary_rows(report)
    path = write_json(args.json, report)
    print_table(report["summary"])
    failed = [n for n, s in report["sections"].items() if s.status == "error"]
    run = getattr(report["sections"].get("tests"), "data", {}).get("run")
    bad_tests = run is not None and (run.failed or run.errors)
    print(f"\n{settings.mode} run: {time.perf_counter() - t0:.0f} s; report: {path}"
          + (f"; sections with errors: {', '.join(failed)}" if failed else "")
          + ("; CUDA tests failed or errored" if bad_tests else ""))
    return 1 if failed or bad_tests else 0


if __name__ == "__main__":
    sys.exit(main())
