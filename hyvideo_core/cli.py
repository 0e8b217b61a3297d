"""`hyvideo` command line (also `python -m hyvideo_core`).

    hyvideo generate --demo                      # the whole pipeline on a tiny embedded model
    hyvideo generate --models-dir ComfyUI/models --prompt "a cat walks on the grass"
    hyvideo plan --width 1280 --height 720 --frames 129 --weight-format fp8_scaled --vram-gb 24
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from .errors import HyVideoError
from .model_files import find_model_files
from .pipeline import CACHES, GenerateSettings, ModelFiles, generate
from .sampling import SOLVERS, SamplingOptions
from .weights.storage import FORMATS

DEMO_SIZE = dict(width=128, height=128, frames=17, steps=8)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except HyVideoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyvideo", description="HunyuanVideo 13B text-to-video.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what every stage did")
    sub = parser.add_subparsers(required=True, metavar="command")
    gen = sub.add_parser("generate", help="text to video file")
    _generate_args(gen)
    gen.set_defaults(run=_run_generate)
    plan = sub.add_parser("plan", help="predict GPU memory for a run and pick block swapping")
    _plan_args(plan)
    plan.set_defaults(run=_run_plan)
    return parser


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true",
                   help=f"run on an embedded tiny random model (no download; defaults {DEMO_SIZE})")
    p.add_argument("--prompt", default="A cat walks on the grass, realistic style.")
    p.add_argument("--negative-prompt", default=None, help="with --cfg-scale > 1 (default: the official one)")
    models = p.add_argument_group("model files")
    models.add_argument("--models-dir", type=Path, help="a ComfyUI models folder; files are found by their public names")
    for name, what in (("dit", "transformer"), ("vae", "VAE"), ("llm", "LLaVA-Llama-3 text encoder (file or folder)"),
                       ("clip", "CLIP-L (file or folder)"), ("tokenizer", "Llama tokenizer folder (single-file LLM)"),
                       ("clip-tokenizer", "CLIP tokenizer folder (single-file CLIP)")):
        models.add_argument(f"--{name}", type=Path, help=what)
    size = p.add_argument_group("video")
    size.add_argument("--width", type=int)
    size.add_argument("--height", type=int)
    size.add_argument("--frames", type=int, help="4k+1 (snapped and reported otherwise)")
    size.add_argument("--fps", type=float, default=24.0)
    size.add_argument("--crf", type=int, help="quality: lower is better (mp4 0-51)")
    size.add_argument("--output", "-o", type=Path, help="mp4, webm or gif (default hyvideo_<seed>.mp4)")
    s = p.add_argument_group("sampling")
    s.add_argument("--steps", type=int)
    s.add_argument("--shift", type=float, default=7.0)
    s.add_argument("--guidance", type=float, default=6.0, help="embedded guidance scale")
    s.add_argument("--cfg-scale", type=float, default=1.0, help="true CFG (> 1 uses the negative prompt)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--solver", choices=sorted(SOLVERS), default="euler")
    s.add_argument("--cache", choices=CACHES, default="none")
    s.add_argument("--cache-threshold", type=float, default=0.15)
    m = p.add_argument_group("memory and speed")
    m.add_argument("--weight-format", choices=FORMATS, default="auto")
    m.add_argument("--attention", choices=("auto", "sdpa", "flash", "sage"), default="auto")
    m.add_argument("--swap", default="0,0", help="'DOUBLE,SINGLE' blocks to offload, or 'auto'")
    m.add_argument("--vram-gb", type=float, help="budget for --swap auto (default: free GPU memory)")
    m.add_argument("--tiling", choices=("auto", "off"), default="auto", help="VAE decode tiling")
    m.add_argument("--device", default="auto")


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, default=129)
    p.add_argument("--weight-format", default="bf16", help="bf16, fp8_scaled, Q8_0, Q4_K, ...")
    p.add_argument("--swap", default="auto", help="'DOUBLE,SINGLE' or 'auto'")
    p.add_argument("--vram-gb", type=float, default=24.0)
    p.add_argument("--cfg", action="store_true", help="true CFG batched (doubles activations)")


def _run_generate(args) -> int:
    if args.demo:
        for key, value in DEMO_SIZE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    settings = _settings(args)
    files = _demo_files() if args.demo else find_model_files(
        args.models_dir, dit=args.dit, vae=args.vae, llm=args.llm, clip=args.clip,
        tokenizer=args.tokenizer, clip_tokenizer=args.clip_tokenizer)
    print(f"hyvideo: {settings.width}x{settings.height}x{settings.frames}, {settings.sampling.steps} steps, "
          f"seed {settings.sampling.seed}{' (demo model, random weights)' if args.demo else ''}", file=sys.stderr)
    with _ProgressBar() as bar:
        result = generate(files, settings, progress=bar.update)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.path)
    return 0


def _demo_files() -> ModelFiles:
    from .demo import write_demo_models
    demo = write_demo_models(Path(tempfile.gettempdir()) / "hyvideo_demo_models")
    return ModelFiles(demo.dit, demo.vae, demo.llm, demo.clip)


def _settings(args) -> GenerateSettings:
    swap = args.swap.strip().lower()
    if swap != "auto":
        try:
            double, single = (int(v) for v in swap.split(","))
        except ValueError:
            raise SystemExit(f"hyvideo: --swap {args.swap!r}: give 'DOUBLE,SINGLE' (e.g. 10,20) or 'auto'.")
        swap = (double, single)
    sampling = SamplingOptions(steps=50 if args.steps is None else args.steps, shift=args.shift, solver=args.solver, seed=args.seed,
                               embedded_guidance=args.guidance, cfg_scale=args.cfg_scale)
    return GenerateSettings(
        prompt=args.prompt, negative_prompt=args.negative_prompt,
        output=args.output or Path(f"hyvideo_{args.seed}.mp4"),
        width=_or(args.width, 1280), height=_or(args.height, 720), frames=_or(args.frames, 129), sampling=sampling,
        weight_format=args.weight_format, attention=args.attention, swap=swap, vram_budget_gb=args.vram_gb,
        cache=args.cache, cache_threshold=args.cache_threshold, tiling=args.tiling, fps=args.fps, crf=args.crf,
        device=args.device)


def _or(value, default):
    return default if value is None else value


def _run_plan(args) -> int:
    from .runtime.planner import GiB, PlanInputs, auto_swap, plan

    inputs = PlanInputs(weight_format=args.weight_format, width=args.width, height=args.height,
                        frames=args.frames, cfg_batched=args.cfg)
    if args.swap == "auto":
        result = auto_swap(inputs, budget=int(args.vram_gb * GiB))
    else:
        double, single = (int(v) for v in args.swap.split(","))
        result = plan(inputs.replace(swap_double=double, swap_single=single))
    print(result.describe())
    return 0


class _ProgressBar:
    """A one-line progress display on stderr (tqdm when it is installed)."""

    def __enter__(self):
        self._bar = None
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            print(f"\r{stage} {done}/{total}", end="", file=sys.stderr)
            return
        if self._bar is None:
            self._bar = tqdm(total=total, desc=stage, file=sys.stderr)
        self._bar.update(done - self._bar.n)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        return False


if __name__ == "__main__":
    raise SystemExit(main())
