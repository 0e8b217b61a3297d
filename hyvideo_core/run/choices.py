"""One list of names per concept, and the defaults every front end shares.

The CLI, the nodes and the HTTP route read these (the frontend gets them through the nodes'
definitions); each list is defined in the room of its concept and only gathered here, so a new
solver or cache policy appears everywhere at once. Node widget defaults equal CLI defaults
because both read DEFAULTS (a test compares them).
"""
from __future__ import annotations

import torch

from ..model.attention import BACKENDS as ATTENTION_BACKENDS
from ..sampling.cache import CACHE_POLICIES, DEFAULT_THRESHOLDS, HUNYUAN_MAG_RATIOS, POLICY_OPTIONS
from ..sampling.context_windows import CONTEXT_SCHEDULES, FUSE_METHODS as CONTEXT_FUSE_METHODS, ContextWindows
from ..sampling.guidance import CFG_MODES
from ..runtime.planner import BACKENDS as PLANNED_ATTENTION, PLANNED_FORMATS
from ..sampling.solvers import SOLVERS
from ..video import FORMATS as VIDEO_FORMATS
from ..weights.storage import DTYPE_NAMES, FORMATS as STORAGE_FORMATS, PLAIN_DTYPES, parse_dtype

SOLVER_NAMES: tuple[str, ...] = tuple(SOLVERS)
CACHE_NAMES: tuple[str, ...] = ("none", *CACHE_POLICIES)
MAG_RATIO_TABLES: tuple[str, ...] = ("auto", *HUNYUAN_MAG_RATIOS)   # MagCache's calibrated tables
# How DiT weights are stored; the `_fast` variant also runs fp8 matmuls where the GPU has them
# (ComfyUI's name for it).
FAST_FP8 = "fp8_e4m3fn_fast"
WEIGHT_FORMATS: tuple[str, ...] = (*STORAGE_FORMATS[:STORAGE_FORMATS.index("fp8_e4m3fn") + 1], FAST_FP8,
                                   *STORAGE_FORMATS[STORAGE_FORMATS.index("fp8_e4m3fn") + 1:])
SWAP_MODES: tuple[str, ...] = ("off", "fixed", "auto")
VAE_TILING: tuple[str, ...] = ("auto", "off")
# What the memory planner prices (plan command, Memory Plan node, route): PLANNED_ATTENTION and
# PLANNED_FORMATS (GGUF files by their quant type), from runtime/planner.py.
# Compute dtypes: the widgets offer PRECISIONS; every dtype argument (load_transformer, load_vae,
# load_text_encoder, the nodes) goes through the one parser, `parse_dtype(value, parameter)`, which
# also takes torch dtypes and the usual aliases (DTYPE_NAMES: 'bfloat16', 'half', 'float32', ...).
PRECISION_DTYPES: dict[str, torch.dtype] = dict(PLAIN_DTYPES)
PRECISIONS: tuple[str, ...] = tuple(PRECISION_DTYPES)
OUTPUT_FORMATS: tuple[str, ...] = tuple(VIDEO_FORMATS)


class Defaults:
    """The values a run uses when nobody says otherwise (official settings at 960x544)."""

    width = 960
    height = 544
    frames = 129
    steps = 50
    shift = 7.0
    embedded_guidance = 6.0
    cfg_scale = 1.0
    cfg_mode = CFG_MODES[0]
    seed = 0
    denoise = 1.0
    solver = "euler"
    riflex_index = 0             # RIFLEx off (4 for HunyuanVideo past 50 latent frames)
    cfg_zero_star = False
    zero_init_steps = 0
    enhance_weight = 0.0         # Enhance-A-Video off (the official demo uses 4)
    cache = "none"
    cache_thresholds = dict(DEFAULT_THRESHOLDS)
    cache_options = {name: dict(options) for name, options in POLICY_OPTIONS.items()}
    weight_format = "auto"
    attention = "auto"
    precision = "bf16"
    swap = "off"
    vae_tiling = "auto"
    fps = 24.0
    output_format = "mp4"
    # Context windows (the node's widgets; the CLI turns them on with --context-frames), in pixel frames.
    context_frames = ContextWindows.length
    context_overlap = ContextWindows.overlap
    context_schedule = ContextWindows.schedule
    context_stride = ContextWindows.stride
    context_freenoise = ContextWindows.freenoise
    context_fuse = ContextWindows.fuse


DEFAULTS = Defaults()


def check_choice(parameter: str, value: str, allowed) -> str:
    """`value` if it is one of `allowed`, else an InvalidInputError naming the parameter and the choices."""
    from ..errors import InvalidInputError
    try:
        known = value in allowed
    except TypeError:   # an unhashable value asked of a dict/set
        known = False
    if not known:
        raise InvalidInputError(f"{parameter}: {value!r} is not one of {list(allowed)}.")
    return value
