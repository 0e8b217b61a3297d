"""Section 2a: the 13B-shaped DiT with random weights, per block, at the real resolutions.

The weights never exist as a file: `RandomSource` is a TensorSource whose tensors are drawn on
the GPU when the loader asks for them, so `load_transformer` (the engine's one loader, with its
storage policies) builds the model there tensor by tensor, at most one spare tensor at a time.
Every key draws from its own seed, so two loads with different storage policies hold the same
weights (the fp8 errors below are against the bf16 model).

One forward at 1280x720x129 takes ~30-40 s on an H100 (SPEC 10.1: 12 PFLOP), too long to repeat
for five variants in a 5-minute check. All blocks of a kind have identical shapes and random
weights do not change the kernels, so a model with ONE double and ONE single block (the real
width, the real token count) is timed stage by stage and the step is extrapolated:
    step = embed + unembed + 20 x double + 40 x single.
`gpu_check_full.py` measures whole 60-block steps at fewer frames against the same formula.
"""
from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass, field

import torch

from gpu_check_common import ROOT, Settings, Size, installed, median, release, sync, timed
from gpu_check_flops import FlopCount, forward_flops
from hyvideo_core.model.attention import resolve_backend
from hyvideo_core.model.config import PRESETS, DiTConfig, infer_from_shapes
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.weights.loader import load_transformer
from hyvideo_core.weights.source import TensorSource
from hyvideo_core.weights.storage import storage_for

OFFICIAL_KEYS = ("shared/reference/dit_keys_official_13b.json",)   # under the repo root or its parent
ATTENTION_PACKAGES = {"flash": "flash_attn", "sage": "sageattention"}


# -- the model ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShapes:
    config: DiTConfig
    shapes: dict[str, tuple[int, ...]]
    source: str              # where the shapes came from


def official_shapes_file():
    for base in (ROOT, ROOT.parent):
        for rel in OFFICIAL_KEYS:
            if (base / rel).is_file():
                return base / rel
    return None


def model_shapes(name: str) -> ModelShapes:
    """The 13B's official key shapes (shared/reference json when present, else the engine's preset,
    which tests/test_gpu_check.py checks equal to the json), or a preset's for 'tiny'/'medium'."""
    if name != "13b":
        return ModelShapes(PRESETS[name], _meta_shapes(PRESETS[name]), f"preset {name!r}")
    found = official_shapes_file()
    preset = PRESETS["hunyuan-video-13b"]
    if found is None:
        return ModelShapes(preset, _meta_shapes(preset), "preset 'hunyuan-video-13b' (shared/reference not found)")
    shapes = {k: tuple(v) for k, v in json.loads(found.read_text()).items()}
    config = infer_from_shapes(shapes)
    if config != preset or shapes != _meta_shapes(preset):
        raise ValueError(f"{found}: the official shapes differ from the engine's 13B preset")
    return ModelShapes(config, shapes, str(found))


def _meta_shapes(config: DiTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = HunyuanVideoTransformer(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


class RandomSource(TensorSource):
    """Official-name tensors drawn on `device` when read. Matrices ~ N(0, 1/fan_in) keep activations
    of order one through 60 blocks; norm scales ~ 1, biases small."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], device, dtype: torch.dtype, seed: int = 0,
                 name: str = "<random weights>"):
        super().__init__()
        self.name, self.device, self.seed = name, torch.device(device), seed
        for key, shape in shapes.items():
            self._shapes[key] = tuple(shape)
            self._dtypes[key] = dtype

    def _read(self, key: str) -> torch.Tensor:
        shape, dtype = self._shapes[key], self._dtypes[key]
        g = torch.Generator(self.device).manual_seed(self.seed + zlib.crc32(key.encode()))
        t = torch.randn(shape, generator=g, device=self.device, dtype=dtype)
        if len(shape) >= 2:
            fan_in = max(1, t[0].numel())
            return t.mul_(fan_in ** -0.5)
        return t.mul_(0.1).add_(1.0) if key.endswith("weight") else t.mul_(0.02)


def reduced(shapes: dict[str, tuple[int, ...]], double: int = 1, single: int = 1) -> dict:
    """The shapes of a model with only the first `double` / `single` blocks (same width)."""
    def keep(key: str) -> bool:
        m = re.match(r"(double|single)_blocks\.(\d+)\.", key)
        return m is None or int(m.group(2)) < (double if m.group(1) == "double" else single)
    return {k: v for k, v in shapes.items() if keep(k)}


def plain_format(device: torch.device) -> tuple[str, torch.dtype]:
    """bf16 on a GPU; float32 in the CPU dry run (bf16 GEMMs are emulated and slow on most CPUs)."""
    return ("bf16", torch.bfloat16) if device.type == "cuda" else ("fp32", torch.float32)


def load_random(shapes: dict, device: torch.device, weight_format: str | None = None, fast_fp8: bool = False,
                attention: str = "sdpa") -> HunyuanVideoTransformer:
    fmt, dtype = plain_format(device)
    source = RandomSource(shapes, device, dtype)
    return load_transformer(source, dtype=dtype, device=device, attention=attention,
                            storage=storage_for(weight_format or fmt, fast_fp8=fast_fp8))


# -- inputs and stage timings ---------------------------------------------------------------------------
@dataclass
class ForwardInputs:
    x: torch.Tensor
    timestep: torch.Tensor
    text: torch.Tensor
    pooled: torch.Tensor
    guidance: torch.Tensor

    def args(self):
        return self.x, self.timestep, self.text, None, self.pooled, self.guidance


def forward_inputs(config: DiTConfig, size: Size, text_tokens: int, device, dtype) -> ForwardInputs:
    """Every text token valid (batch 1 trims padding anyway): L = N + text_tokens, as SPEC 10.1."""
    g = torch.Generator(device).manual_seed(1)
    t, h, w = size.latent
    rand = lambda *s: torch.randn(*s, generator=g, device=device, dtype=dtype)  # noqa: E731
    return ForwardInputs(rand(1, config.in_channels, t, h, w), torch.tensor([900.0], device=device),
                         rand(1, text_tokens, config.text_dim), rand(1, config.pooled_text_dim),
                         torch.tensor([6000.0], device=device))


@dataclass
class StageTimes:
    """Median seconds of each stage of one forward, and the step they add up to."""

    size: str
    embed_s: float
    unembed_s: float
    double_s: float
    single_s: float
    step_s: float            # embed + unembed + n_double x double + n_single x single
    n_double: int
    n_single: int


def time_stages(model, inputs: ForwardInputs, size: Size, n_double: int, n_single: int, device,
                warmup: int, repeats: int) -> StageTimes:
    """Stages through the model's public entry points (embed, run_blocks, unembed), so the
    placement and attention policies apply as in a real forward."""
    first_single = len(model.double_blocks)
    with torch.inference_mode():
        e = model.embed(*inputs.args())
        run = lambda a, b: model.run_blocks(e.img, e.txt, e.ctx, a, b)  # noqa: E731
        embed = median(timed(lambda: model.embed(*inputs.args()), device, warmup, repeats))
        double = median(timed(lambda: run(0, 1), device, warmup, repeats))
        single = median(timed(lambda: run(first_single, first_single + 1), device, warmup, repeats))
        unembed = median(timed(lambda: model.unembed(e.img, e), device, warmup, repeats))
    step = embed + unembed + n_double * double + n_single * single
    return StageTimes(size.label, embed, unembed, double, single, step, n_double, n_single)


# -- section 2a -------------------------------------------------------------------------------------------
@dataclass
class VariantResult:
    variant: str
    status: str                                   # ok | not installed | not run: ... | error: ...
    weight_format: str | None = None
    attention: str | None = None
    fp8_path: str | None = None                   # scaled_mm | dequantize (the codec's choice here)
    times: list[StageTimes] = field(default_factory=list)
    achieved_tflops: dict[str, float] = field(default_factory=dict)       # per size, extrapolated step
    fraction_of_gemm: dict[str, float] = field(default_factory=dict)
    block_fraction_of_gemm: dict[str, float] = field(default_factory=dict)  # double block alone
    rel_error_vs_plain: float | None = None       # ||y - y_bf16|| / ||y_bf16|| of the 1+1 model's forward


@dataclass
class CompileResult:
    size: str
    backend: str
    compile_s: float             # first compiled calls minus their eager time (both block kinds)
    eager_double_s: float
    compiled_double_s: float
    eager_single_s: float
    compiled_single_s: float
    step_ratio: float            # extrapolated compiled step / eager step


def variant_spec(name: str) -> tuple[str | None, bool, str]:
    """(weight format or None for plain, fast fp8, attention) of a variant name."""
    return {"bf16_sdpa": (None, False, "sdpa"), "fp8_scaled": ("fp8_scaled", False, "sdpa"),
            "fp8_fast": ("fp8_scaled", True, "sdpa"), "flash": (None, False, "flash"),
            "sage": (None, False, "sage")}[name]


def attention_status(name: str, device: torch.device) -> str | None:
    """None when the backend can run here, else why not ('not installed' when its package is absent)."""
    package = ATTENTION_PACKAGES.get(name)
    if package is None:
        return None
    if not installed(package):
        return "not installed"
    if device.type != "cuda":
        return "not run: CUDA only"
    return None


def fp8_path(model, device, dtype) -> str | None:
    layer = model.double_blocks[0].img_attn_qkv
    codec = getattr(layer, "codec", None)
    return None if codec is None else codec.select_path(layer, device, dtype)


def run_blocks_section(settings: Settings, device: torch.device, gemm_flops: float, result) -> None:
    shapes = model_shapes(settings.dit_config)
    full = shapes.config
    result.data["config"] = {"source": shapes.source, "hidden": full.hidden_size, "heads": full.heads,
                             "double_blocks": full.double_blocks, "single_blocks": full.single_blocks,
                             "text_tokens": settings.text_tokens}
    result.notes.append(f"timed: 1 double + 1 single block at full width; step = embed + unembed + "
                        f"{full.double_blocks} x double + {full.single_blocks} x single (extrapolated)")
    small = reduced(shapes.shapes)
    flops = {s.label: forward_flops(full, s.latent, settings.text_tokens) for s in settings.block_sizes}
    result.data["flops"] = flops
    variants: dict[str, VariantResult] = {}
    reference: dict[str, torch.Tensor] = {}
    plain = None
    for name in settings.variants:
        fmt, fast, attention = variant_spec(name)
        why_not = attention_status(attention, device)
        if why_not:
            variants[name] = VariantResult(name, why_not, attention=attention)
            continue
        try:
            if fmt is None:   # plain weights: one model, the attention backend swapped (model.attention)
                plain = plain or load_random(small, device)
                model = plain
                model.attention = resolve_backend(attention, device)
            else:
                model = load_random(small, device, fmt, fast_fp8=fast)
            variants[name] = _measure_variant(name, model, settings, device, flops, gemm_flops, reference, full)
        except Exception as exc:  # one variant failing keeps the others
            variants[name] = VariantResult(name, f"error: {type(exc).__name__}: {str(exc).strip()[:500]}")
        finally:
            if fmt is not None:
                model = None
            release(device)
    result.data["variants"] = variants
    if settings.compile_size is not None and plain is not None:
        plain.attention = resolve_backend("sdpa", device)
        result.data["compile"] = _measure_compile(plain, settings, device, full)
    plain = None
    release(device)


def _measure_variant(name, model, settings, device, flops, gemm_flops, reference, full) -> VariantResult:
    fmt, _, attention = variant_spec(name)
    _, dtype = plain_format(device)
    out = VariantResult(name, "ok", model.load_report.storage, attention, fp8_path(model, device, dtype))
    for size in settings.block_sizes:
        inputs = forward_inputs(model.config, size, settings.text_tokens, device, dtype)
        if size == settings.block_sizes[0]:   # accuracy against the plain sdpa model (same weights)
            with torch.inference_mode():
                y = model(*inputs.args()).float()
            if name == "bf16_sdpa":
                reference["y"] = y
            elif "y" in reference:
                out.rel_error_vs_plain = float((y - reference["y"]).norm() / reference["y"].norm())
            del y
        times = time_stages(model, inputs, size, full.double_blocks, full.single_blocks, device,
                            settings.warmup, settings.repeats)
        out.times.append(times)
        count: FlopCount = flops[size.label]
        achieved = count.total / times.step_s
        out.achieved_tflops[size.label] = achieved / 1e12
        out.fraction_of_gemm[size.label] = achieved / gemm_flops
        out.block_fraction_of_gemm[size.label] = count.per_double / times.double_s / gemm_flops
        del inputs
    return out


def _measure_compile(model, settings: Settings, device, full: DiTConfig) -> CompileResult:
    from hyvideo_core.runtime.compile import compile_blocks
    size = settings.compile_size
    _, dtype = plain_format(device)
    inputs = forward_inputs(model.config, size, settings.text_tokens, device, dtype)
    eager = time_stages(model, inputs, size, full.double_blocks, full.single_blocks, device,
                        settings.warmup, settings.repeats)
    compile_blocks(model, backend=settings.compile_backend)
    first_single = len(model.double_blocks)
    with torch.inference_mode():
        e = model.embed(*inputs.args())
        t0 = time.perf_counter()
        model.run_blocks(e.img, e.txt, e.ctx, 0, 1)
        model.run_blocks(e.img, e.txt, e.ctx, first_single, first_single + 1)
        sync(device)
        first = time.perf_counter() - t0
    compiled = time_stages(model, inputs, size, full.double_blocks, full.single_blocks, device,
                           settings.warmup, settings.repeats)
    return CompileResult(size.label, settings.compile_backend, max(0.0, first - eager.double_s - eager.single_s),
                         eager.double_s, compiled.double_s, eager.single_s, compiled.single_s,
                         compiled.step_s / eager.step_s)
