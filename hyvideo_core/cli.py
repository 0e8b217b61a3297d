"""`hyvideo` command line (also `python -m hyvideo_core`).

    hyvideo generate --demo                      # the whole run on a tiny embedded model
    hyvideo generate --models-dir ComfyUI/models --prompt "a cat walks on the grass"
    hyvideo generate --image first.png --dit i2v.safetensors --llm llava-folder ...   # image to video
    hyvideo plan --width 1280 --height 720 --frames 129 --weight-format fp8_scaled --vram-gb 24

Both commands share their size, memory and swap options, their checks and their snapping; every
option and model file is checked before anything loads. Progress goes to stderr, stage by stage;
the written file's path is the only line on stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from .errors import HyVideoError, InvalidInputError
from .run.choices import (ATTENTION_BACKENDS, CACHE_NAMES, CONTEXT_FUSE_METHODS, CONTEXT_SCHEDULES, DEFAULTS,
                          SOLVER_NAMES, VAE_TILING, WEIGHT_FORMATS)
from .run.ranks import ParallelRequest
from .run.settings import CacheRequest, GenerateSettings, ModelFiles, SwapRequest
from .terminal import NoteLog, TerminalReporter

DEMO_SIZE = dict(width=128, height=128, frames=17, steps=8)
PLAN_GPU_GB = 24.0  # `plan` on a machine without a GPU plans for a 24 GB card


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    notes = NoteLog.install(verbose=args.verbose)
    try:
        return args.run(args, notes)
    except HyVideoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    finally:
        notes.uninstall()


class _Help(argparse.HelpFormatter):
    """Shows every option's default (argparse's own formatter skips options without help text)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyvideo", description="HunyuanVideo 13B text-to-video.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what every stage did")
    sub = parser.add_subparsers(required=True, metavar="command")
    helpful = _Help
    gen = sub.add_parser("generate", help="text to video file", formatter_class=helpful)
    _generate_args(gen)
    gen.set_defaults(run=_run_generate)
    plan = sub.add_parser("plan", help="predict GPU memory for a run and pick block swapping", formatter_class=helpful)
    _size_args(plan)
    _memory_args(plan, plan=True)
    plan.set_defaults(run=_run_plan)
    for command in (gen, plan):
        for action in command._actions:
            if not action.help and action.default not in (None, False, []):
                action.help = "(default: %(default)s)"   # argparse shows nothing for options without help
    return parser


def _size_args(p: argparse.ArgumentParser) -> None:
    size = p.add_argument_group("video")
    size.add_argument("--width", type=int, default=DEFAULTS.width, help="multiple of 16 (rounded up otherwise)")
    size.add_argument("--height", type=int, default=DEFAULTS.height, help="multiple of 16 (rounded up otherwise)")
    size.add_argument("--frames", type=int, default=DEFAULTS.frames, help="4k+1 (rounded down otherwise)")


def _memory_args(p: argparse.ArgumentParser, plan: bool = False) -> None:
    m = p.add_argument_group("memory and speed")
    from .runtime.planner import PLANNED_FORMATS
    formats = PLANNED_FORMATS if plan else WEIGHT_FORMATS
    m.add_argument("--weight-format", choices=formats, default="bf16" if plan else DEFAULTS.weight_format,
                   help="how DiT weights are stored" + (" (GGUF: its quant type)" if plan else ""))
    m.add_argument("--attention", choices=ATTENTION_BACKENDS, default=DEFAULTS.attention)
    m.add_argument("--swap", default="auto" if plan else DEFAULTS.swap,
                   help="blocks kept in RAM: 'DOUBLE,SINGLE' (e.g. 10,20), 'auto' (least that fits) or 'off'")
    m.add_argument("--vram-gb", type=float, default=None,
                   help="GiB of the GPU the run may fill (default: the GPU's total memory"
                        + (f"; {PLAN_GPU_GB:g} without a GPU)" if plan else ")"))
    if plan:
        m.add_argument("--cfg", action="store_true", help="true CFG batched (doubles activations)")
        m.add_argument("--tiling", choices=VAE_TILING, default=DEFAULTS.vae_tiling, help="VAE decode tiling")
        m.add_argument("--i2v-mode", choices=("token_replace", "latent_concat", "skyreels"), default=None,
                       help="plan an image-to-video run: its text stream is longer (396 / 540 / 256 tokens)")
    _parallel_args(p, plan)


def _parallel_args(p: argparse.ArgumentParser, plan: bool) -> None:
    g = p.add_argument_group("several GPUs" + (" (the plan is per GPU)" if plan else
                                               " (start with torchrun --nproc_per_node N)"))
    if plan:
        g.add_argument("--gpus", type=int, default=None,
                       help="GPUs of the run: ulysses x ring x (2 with --cfg-parallel) (default: that product)")
    g.add_argument("--ulysses-degree", type=int, default=1,
                   help="sequence parallel: attention heads split over this many GPUs (divides the 24 heads)")
    g.add_argument("--ring-degree", type=int, default=1,
                   help="sequence parallel: K/V passed around a ring of this many GPUs")
    g.add_argument("--cfg-parallel", action="store_true",
                   help="true CFG's cond and uncond halves on different GPUs (implies --cfg)" if plan else
                   "true CFG's cond and uncond halves on different GPUs (needs --cfg-scale > 1)")
    if not plan:
        g.add_argument("--vae-parallel", action="store_true", help="spread the VAE decode's tiles over the GPUs")


class _Given(argparse.Action):
    """Stores the value and records that the option was given (`args.<dest>_given`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


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
    models.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]",
                        help="a LoRA to apply (repeatable; strength 1 unless given)")
    models.add_argument("--vision", type=Path,
                        help="image-to-video: the LLaVA vision tower (the llava-llama-3 folder, or ComfyUI's "
                             "clip_vision/llava_llama3_vision.safetensors; default: --llm when it is a folder)")
    from .conditioning.image import I2V_MODES
    i2v = p.add_argument_group("image to video (HunyuanVideo-I2V, SkyReels-V1 I2V)")
    i2v.add_argument("--image", type=Path, help="the first frame (png, jpg, webp); fitted to --width x --height")
    i2v.add_argument("--i2v-mode", choices=I2V_MODES, default="auto",
                     help="auto: from the DiT's input channels (16 token_replace, 33 latent_concat, 32 skyreels)")
    i2v.add_argument("--i2v-stability", action=argparse.BooleanOptionalAction, default=True,
                     help="start from 0.999 noise + 0.001 image latent (default shift 7); --no-i2v-stability: "
                          "dynamic, plain noise (default shift 17)")
    _size_args(p)
    out = p.add_argument_group("output")
    out.add_argument("--fps", type=float, default=DEFAULTS.fps)
    out.add_argument("--crf", type=int, help="quality: lower is better (mp4 0-51, webm 0-63)")
    out.add_argument("--output", "-o", type=Path, help="mp4, webm or gif (default hyvideo_<seed>.mp4)")
    s = p.add_argument_group("sampling")
    s.add_argument("--steps", type=int, default=DEFAULTS.steps)
    s.add_argument("--shift", type=float, default=DEFAULTS.shift, action=_Given,
                   help="flow shift (with --image: 7 with --i2v-stability, 17 without, unless given)")
    s.add_argument("--guidance", type=float, default=DEFAULTS.embedded_guidance, help="embedded guidance scale")
    s.add_argument("--cfg-scale", type=float, default=DEFAULTS.cfg_scale, help="true CFG (> 1 uses the negative prompt)")
    s.add_argument("--seed", type=int, default=DEFAULTS.seed)
    s.add_argument("--solver", choices=SOLVER_NAMES, default=DEFAULTS.solver)
    s.add_argument("--cache", choices=CACHE_NAMES, default=DEFAULTS.cache)
    s.add_argument("--cache-threshold", type=float, default=None,
                   help=f"default per cache: {DEFAULTS.cache_thresholds}")
    x = p.add_argument_group("long videos and guidance extras (all off by default)")
    x.add_argument("--riflex-index", type=int, default=DEFAULTS.riflex_index,
                   help="RIFLEx: the temporal RoPE frequency to fix against repeating motion in long videos "
                        "(4 for HunyuanVideo; applies past 50 latent frames, 201+ frames; 0 = off)")
    x.add_argument("--cfg-zero-star", action="store_true",
                   help="CFG-Zero*: optimised scale for true CFG (with --cfg-scale > 1)")
    x.add_argument("--zero-init-steps", type=int, default=DEFAULTS.zero_init_steps,
                   help="CFG-Zero* zero-init: the first N steps output zero velocity (its HunyuanVideo demo: 2 of 50)")
    x.add_argument("--enhance-weight", type=float, default=DEFAULTS.enhance_weight,
                   help="Enhance-A-Video: cross-frame attention boost (official demo: 4; 0 = off)")
    w = p.add_argument_group("context windows (long videos; off unless --context-frames is given)")
    w.add_argument("--context-frames", type=int, default=None, metavar="N",
                   help=f"window length in pixel frames (e.g. {DEFAULTS.context_frames}); the DiT sees one window "
                        "at a time and the memory plan is for one window")
    w.add_argument("--context-overlap", type=int, default=DEFAULTS.context_overlap, metavar="M",
                   help="pixel frames shared by neighbouring windows")
    w.add_argument("--context-schedule", choices=CONTEXT_SCHEDULES, default=DEFAULTS.context_schedule,
                   help="static: fixed windows; uniform / looped: windows shift every step (ComfyUI's rules)")
    w.add_argument("--context-stride", type=int, default=DEFAULTS.context_stride,
                   help="levels of the uniform schedules (1 = contiguous windows)")
    w.add_argument("--context-fuse", choices=CONTEXT_FUSE_METHODS, default=DEFAULTS.context_fuse,
                   help="how overlapping windows are blended")
    w.add_argument("--freenoise", action=argparse.BooleanOptionalAction, default=DEFAULTS.context_freenoise,
                   help="FreeNoise: window-wise shuffled repeats of the initial noise")
    _memory_args(p)
    p.add_argument("--tiling", choices=VAE_TILING, default=DEFAULTS.vae_tiling, help="VAE decode tiling")
    p.add_argument("--device", default="auto")


def _run_generate(args, notes: NoteLog) -> int:
    from .run.generate import run_checked
    from .run.validate import check_run

    if args.demo:
        for key, value in DEMO_SIZE.items():
            if _untouched(args, key):
                setattr(args, key, value)
    i2v_notes = _i2v_defaults(args)
    settings = _settings(args)
    files = _demo_files() if args.demo else _model_files(args)
    checked = check_run(files, settings)
    checked = dataclasses.replace(checked, notes=(*checked.notes, *i2v_notes))
    leader = os.environ.get("RANK", "0") == "0"
    if not leader:
        notes.silence()
    with TerminalReporter(notes) if leader else contextlib.nullcontext(None) as reporter:
        if leader:
            _header(checked, args.demo)
            for note in checked.notes:
                notes.show(note)
        result = run_checked(checked, reporter=reporter)
    if leader:
        print(result.summary(), file=sys.stderr)
        print(result.path)
    return 0


def _i2v_defaults(args) -> list[str]:
    """With --image: the official shift for the mode unless --shift was given (noted)."""
    if args.image is None:
        return []
    from .conditioning.image import recommended_shift
    notes = []
    if not getattr(args, "shift_given", False):
        args.shift = recommended_shift(args.i2v_stability)
        notes.append(f"--image: shift {args.shift:g}, the official value for "
                     f"{'--i2v-stability' if args.i2v_stability else 'dynamic (--no-i2v-stability)'} (--shift to "
                     "change)")
    return notes     # the demo has no vision tower: the run notes that the text is encoded without the image


def _header(checked, demo: bool) -> None:
    s = checked.settings
    print(f"hyvideo: {s.width}x{s.height}x{s.frames}, {s.sampling.steps} steps, seed {s.sampling.seed}, "
          f"{s.swap.describe()}, {s.cache.describe()}"
          f"{', ' + s.parallel.describe() if s.parallel.active else ''}"
          f"{' (demo model, random weights)' if demo else ''}", file=sys.stderr)


def _untouched(args, key: str) -> bool:
    return getattr(args, key) == _parser_defaults()[key]


def _parser_defaults() -> dict:
    return {"width": DEFAULTS.width, "height": DEFAULTS.height, "frames": DEFAULTS.frames, "steps": DEFAULTS.steps}


def _model_files(args) -> ModelFiles:
    from .model_files import find_model_files
    given = dict(dit=args.dit, vae=args.vae, llm=args.llm, clip=args.clip)
    if args.models_dir is None and not all(given.values()):
        missing = [f"--{k}" for k, v in given.items() if v is None]
        raise InvalidInputError(
            f"no model files: give --models-dir (a ComfyUI models folder) or {', '.join(missing)}. To try the whole "
            "run without downloading anything, use `hyvideo generate --demo` (a tiny embedded random model).")
    if args.models_dir is not None and not args.models_dir.is_dir():
        raise InvalidInputError(f"--models-dir {args.models_dir}: no such folder.")
    files = find_model_files(args.models_dir, **given, tokenizer=args.tokenizer, clip_tokenizer=args.clip_tokenizer)
    vision = args.vision
    if vision is None and args.image is not None and _holds_vision(Path(files.llm)):
        vision = files.llm           # the llava-llama-3 folder holds the vision tower
    return ModelFiles(files.dit, files.vae, files.llm, files.clip, files.tokenizer, files.clip_tokenizer,
                      tuple(_lora(text) for text in args.lora), vision)


def _holds_vision(folder: Path) -> bool:
    """A LLaVA folder (its config names a vision tower), or one holding HunyuanVideo-I2V's text_encoder_i2v/."""
    if not folder.is_dir():
        return False
    if (folder / "text_encoder_i2v").is_dir():
        return True
    config = folder / "config.json"
    return config.is_file() and "vision_config" in config.read_text(errors="replace")


def _lora(text: str) -> tuple[Path, float]:
    path, _, strength = text.rpartition(":") if ":" in Path(text).name else (text, "", "1")
    try:
        return Path(path), float(strength)
    except ValueError:
        raise InvalidInputError(f"--lora {text!r}: give PATH or PATH:STRENGTH (e.g. style.safetensors:0.8).") from None


def _demo_files() -> ModelFiles:
    from .demo import write_demo_models
    demo = write_demo_models(Path(tempfile.gettempdir()) / "hyvideo_demo_models")
    return ModelFiles(demo.dit, demo.vae, demo.llm, demo.clip)


def _settings(args) -> GenerateSettings:
    from .sampling import SamplingOptions
    sampling = SamplingOptions(steps=args.steps, shift=args.shift, solver=args.solver, seed=args.seed,
                               embedded_guidance=args.guidance, cfg_scale=args.cfg_scale,
                               riflex_index=args.riflex_index, cfg_zero_star=args.cfg_zero_star,
                               zero_init_steps=args.zero_init_steps, enhance_weight=args.enhance_weight)
    sampling = dataclasses.replace(sampling, context=_context(args))
    return GenerateSettings(
        prompt=args.prompt, negative_prompt=args.negative_prompt,
        output=args.output or Path(f"hyvideo_{args.seed}.mp4"),
        width=args.width, height=args.height, frames=args.frames, sampling=sampling,
        weight_format=args.weight_format, attention=args.attention, swap=SwapRequest.parse(args.swap),
        budget_gb=args.vram_gb, cache=CacheRequest(args.cache, args.cache_threshold), tiling=args.tiling,
        fps=args.fps, crf=args.crf, device=args.device,
        parallel=ParallelRequest(args.ulysses_degree, args.ring_degree, args.cfg_parallel, args.vae_parallel),
        image=args.image, i2v_mode=args.i2v_mode, i2v_stability=args.i2v_stability)


def _context(args):
    """--context-frames turns context windows on; every --context-* value is checked now, by its name."""
    if args.context_frames is None:
        return None
    from .sampling import ContextWindows
    return ContextWindows(args.context_frames, args.context_overlap, args.context_schedule, args.context_stride,
                          args.freenoise, args.context_fuse).check()


def _run_plan(args, notes: NoteLog) -> int:
    from .run.memory import budget_bytes, plan_placement
    from .run.validate import check_size
    from .runtime.devices import is_cuda, main_device
    from .runtime.planner import PlanInputs, check_parallel

    size = check_size(args.width, args.height, args.frames)
    for note in size.adjustments:
        notes.show(note)
    swap = SwapRequest.parse(args.swap)
    device = main_device("auto")
    budget_gb = args.vram_gb if args.vram_gb is not None or is_cuda(device) else PLAN_GPU_GB
    if args.vram_gb is None and not is_cuda(device):
        notes.show(f"no CUDA device here: planning for a {PLAN_GPU_GB:g} GiB GPU (--vram-gb to change)")
    budget = budget_bytes(budget_gb, device)
    tiles = {} if args.tiling == "auto" else dict(vae_tile_px=None, vae_tile_frames=None)
    attention = "sdpa" if args.attention == "auto" else args.attention
    if args.cfg_parallel and not args.cfg:
        notes.show("--cfg-parallel: planning true CFG (the cond and uncond halves it splits)")
    inputs = PlanInputs(weight_format=args.weight_format, width=size.width, height=size.height, frames=size.frames,
                        cfg_batched=args.cfg or args.cfg_parallel, attention=attention,
                        ulysses_degree=args.ulysses_degree, ring_degree=args.ring_degree,
                        cfg_parallel=args.cfg_parallel, **tiles)
    if args.i2v_mode is not None:
        from .runtime.planner import TEXT_TOKENS
        inputs = inputs.replace(text_tokens=TEXT_TOKENS[args.i2v_mode])
    check_parallel(inputs, gpus=inputs.gpus if args.gpus is None else args.gpus)
    placement = plan_placement(inputs, swap, budget, device)
    if placement.note:
        notes.show(placement.note)
    print(placement.plan.describe())
    verdict = "fits" if placement.plan.fits(budget) else "does NOT fit"
    card = f" per GPU (each of the {inputs.gpus})" if inputs.gpus > 1 else ""
    print(f"{verdict} in {budget / 2**30:.1f} GiB{card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
