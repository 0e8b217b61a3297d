"""Memory planner: will this run fit on the GPU, and with how much block swapping?

`plan(PlanInputs(...))` predicts the peak main-device memory of a text-to-video run from counted
bytes, phase by phase:
- sampling: resident DiT weights + block-swap slots + the largest block's activations (with the
  attention workspace of the chosen backend and the dequantisation temporaries of fp8/GGUF
  weights, see activations.py) + latents and text conditioning;
- decoding: the VAE's weights + its largest tile's working memory + the decoded video it holds
  (vae/memory.py: the same figures the VAE's tile chooser fits into the free memory), plus the DiT
  weights that are still resident unless `unload_dit_for_decode`.
A fixed reserve (CUDA context, allocator fragmentation) is added to the peak.

Several GPUs (`ulysses_degree`, `ring_degree`, `cfg_parallel`; SPEC_NEXT 1.2-1.5) are planned
per GPU, every GPU running the same plan:
- weights are not divided: every GPU holds the whole model (or its block swap);
- sequence parallelism gives each GPU N / (ulysses x ring) image tokens (padded up to a whole
  share) and the whole text; the attention works on the full sequence for this GPU's heads
  (Ulysses: heads / ulysses after the all-to-all; ring: K/V chunks of N / ring tokens at a time),
  priced in activations.py after what those algorithms hold;
- CFG parallel puts the cond and uncond halves of a batched true-CFG run on different GPUs: the
  batch per GPU halves (it needs true CFG, `cfg_batched`);
- latents and text conditioning stay whole on every GPU (the sampler runs everywhere);
- the VAE decode with parallel tiles (parallel/vae_decode.py) runs the same tile per GPU; rank 0
  also receives one round of tiles from the others (priced on every GPU: the plan is per GPU).
`check_parallel(inputs, gpus)` refuses degrees that cannot run, naming the allowed values.

`auto_swap(inputs, budget)` returns the plan with the fewest swapped bytes that fits (swapped bytes
are what crosses PCIe every step), or raises OutOfMemoryError naming the smallest budget that
would work. The text encoders are assumed to be off the GPU while sampling (they run first).

Image-to-video (SPEC_NEXT 2.6) changes only the text stream: `text_tokens` = the image tokens the
encoder keeps + 252 text tokens (TEXT_TOKENS; the run layer passes the embeds' real count). The
extra input channels (16 + 1 concatenated on the latent) are a few MB: not priced.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..errors import InvalidInputError, OutOfMemoryError
from ..model.attention import BACKENDS as ATTENTION_BACKENDS
from ..model.config import PRESETS, DiTConfig
from ..vae.config import VAEConfig
from ..vae.memory import DEFAULT_CONFIG as VAE_DEFAULT_CONFIG, decode_memory, decode_tile_shape
from ..vae.vae import vae_weight_bytes
from ..vae.tile_choice import tiles_of
from .activations import Tokens, block_peak, dequant_workspace
from .block_swap import packed_bytes
from .weight_table import WeightTable, compute_dtype_for, table_for_format

GiB = 2**30
# Tokens of the DiT's text stream: T2V's 256; I2V [every k-th of 576 image tokens || 256 - 4 text].
TEXT_TOKENS = {"t2v": 256, "token_replace": 144 + 252, "latent_concat": 288 + 252, "skyreels": 256}
# What the planner prices: the loadable attention backends ('auto' priced as sdpa) and the unfused
# sdpa path; every storage format, with GGUF files by their quant type.
BACKENDS = (*(b for b in ATTENTION_BACKENDS if b != "auto"), "sdpa_math")
PLANNED_FORMATS = ("bf16", "fp16", "fp32", "fp8_e4m3fn", "fp8_e5m2", "fp8_scaled", "Q8_0", "Q6_K", "Q5_K", "Q4_K",
                   "Q4_0")


@dataclass(frozen=True)
class PlanInputs:
    config: DiTConfig = PRESETS["hunyuan-video-13b"]
    weight_format: str = "bf16"          # bf16 | fp16 | fp32 | fp8_e4m3fn | fp8_e5m2 | fp8_scaled | Q8_0 | Q4_K | ...
    width: int = 1280
    height: int = 720
    frames: int = 129
    batch: int = 1                       # videos per call
    cfg_batched: bool = False            # true CFG with cond+uncond in one batch doubles activations
    swap_double: int = 0
    swap_single: int = 0
    offload_txt_in: bool = False
    offload_img_in: bool = False
    prefetch: bool = True
    attention: str = "sdpa"              # sdpa (fused kernels) | sdpa_math | flash | sage
    text_tokens: int = 256               # TEXT_TOKENS: 396 token_replace I2V, 540 latent_concat
    vae_tile_px: int | None = 256        # spatial decode tile in pixels (None: untiled)
    vae_tile_frames: int | None = 64     # temporal decode tile in frames (None: untiled)
    vae_dtype: torch.dtype = torch.float16
    vae_config: VAEConfig = VAE_DEFAULT_CONFIG   # 884-16c-hy: the official VAE file
    vae_output_on_device: bool = False   # decoded video assembled on the GPU (the nodes and pipeline use RAM)
    unload_dit_for_decode: bool = False
    ulysses_degree: int = 1              # sequence parallel: heads split over this many GPUs (all-to-all)
    ring_degree: int = 1                 # sequence parallel: K/V passed around a ring of this many GPUs
    cfg_parallel: bool = False           # cond and uncond halves of true CFG on different GPUs
    compute_dtype: torch.dtype | None = None   # default: the format's dtype, bf16 for fp8/GGUF
    reserve: int = GiB // 2
    weights: WeightTable | None = None   # exact table of a loaded model (plan_for_model)

    def replace(self, **changes) -> "PlanInputs":
        return dataclasses.replace(self, **changes)

    @property
    def gpus(self) -> int:
        """The world size these degrees need: ulysses x ring x (2 with CFG parallel)."""
        return self.ulysses_degree * self.ring_degree * (2 if self.cfg_parallel else 1)


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    breakdown: dict[str, int]            # sampling-phase terms, then decode-phase terms
    sampling_peak: int
    decode_peak: int
    peak: int                            # max of the phases + reserve
    peak_point: str                      # where the block activations peak
    swap: tuple[int, int]                # (double, single) actually swapped (clamped)
    notes: list[str] = field(default_factory=list)

    def fits(self, budget: int) -> bool:
        return self.peak <= budget

    def describe(self) -> str:
        i = self.inputs
        per_gpu = ""
        if i.gpus > 1:
            per_gpu = (f"per GPU of {i.gpus} (ulysses {i.ulysses_degree} x ring {i.ring_degree}"
                       + (" x cfg 2" if i.cfg_parallel else "") + "), ")
        lines = [f"{per_gpu}{i.width}x{i.height}x{i.frames} {i.weight_format}, batch {_gpu_batch(i)}, "
                 f"attention {i.attention}, swap {self.swap[0]} double + {self.swap[1]} single"
                 + (" + txt_in" if i.offload_txt_in else "") + f": peak {self.peak / GiB:.2f} GiB"]
        lines += [f"  {name:<34} {value / GiB:8.2f} GiB" for name, value in self.breakdown.items()]
        lines.append(f"  {'sampling phase':<34} {self.sampling_peak / GiB:8.2f} GiB  (activation peak at {self.peak_point})")
        lines.append(f"  {'decode phase':<34} {self.decode_peak / GiB:8.2f} GiB")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def latent_grid(inputs: PlanInputs) -> tuple[int, int, int]:
    if inputs.width % 16 or inputs.height % 16 or (inputs.frames - 1) % 4:
        raise InvalidInputError(
            f"planner: {inputs.width}x{inputs.height}x{inputs.frames} is not a valid size: width and height "
            "must be multiples of 16 and frames 4k+1 (e.g. 1280x720x129).")
    return (inputs.frames - 1) // 4 + 1, inputs.height // 8, inputs.width // 8


def check_parallel(inputs: PlanInputs, gpus: int | None = None) -> None:
    """Refuse degrees that cannot run: Ulysses must divide the heads, CFG parallel needs true CFG,
    and `gpus` (when given) must equal ulysses x ring x (2 with CFG parallel)."""
    heads = inputs.config.heads
    u, r = inputs.ulysses_degree, inputs.ring_degree
    ulysses_ok = [d for d in range(1, heads + 1) if heads % d == 0]
    for name, value in (("ulysses_degree", u), ("ring_degree", r)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(f"planner: {name}={value!r}; it must be a whole number >= 1 (1 = off).")
    if u not in ulysses_ok:
        raise InvalidInputError(
            f"planner: ulysses_degree={u} does not divide the model's {heads} attention heads; allowed: "
            f"{', '.join(map(str, ulysses_ok))} (use ring_degree for the rest of the GPUs).")
    if inputs.cfg_parallel and not inputs.cfg_batched:
        raise InvalidInputError(
            "planner: cfg_parallel splits the cond and uncond halves of true CFG over two GPU groups; "
            "turn true CFG on (cfg_batched, a CFG scale above 1) or cfg_parallel off.")
    if gpus is not None and gpus != inputs.gpus:
        raise InvalidInputError(
            f"planner: {gpus} GPU(s) but ulysses {u} x ring {r}" + (" x cfg 2" if inputs.cfg_parallel else "")
            + f" = {inputs.gpus}; " + parallel_choices(gpus, heads))


def parallel_choices(gpus: int, heads: int) -> str:
    """The (ulysses, ring[, cfg]) degrees that fill `gpus` GPUs, as a sentence."""
    if gpus < 1:
        return "the GPU count must be 1 or more."
    ways = []
    for cfg, label in ((1, ""), (2, " with CFG parallel")):
        if gpus % cfg:
            continue
        sp = gpus // cfg
        combos = [f"{u}x{sp // u}" for u in range(1, heads + 1) if heads % u == 0 and sp % u == 0]
        ways.append(f"ulysses x ring = {', '.join(combos)}{label}")
    return f"with {gpus} GPU(s) use " + "; or ".join(ways) + "."


def plan(inputs: PlanInputs) -> Plan:
    if inputs.attention not in BACKENDS:
        raise InvalidInputError(f"planner: attention={inputs.attention!r}; choose one of {list(BACKENDS)}.")
    check_parallel(inputs)
    compute = inputs.compute_dtype or compute_dtype_for(inputs.weight_format)
    table = inputs.weights or table_for_format(inputs.config, inputs.weight_format, compute)
    return _assemble(inputs, table, _workload(inputs, table, compute))


@dataclass(frozen=True)
class _Workload:
    """Everything in a plan that does not depend on the swap counts."""

    activations: int
    point: str
    latents_text: int
    decode: dict[str, int]


def _workload(inputs: PlanInputs, table: WeightTable, compute: torch.dtype) -> _Workload:
    cfg = inputs.config
    t, h, w = latent_grid(inputs)
    batch = inputs.batch * (2 if inputs.cfg_batched else 1)
    _, share = image_tokens_per_gpu(inputs)      # all of them on one GPU
    tokens = Tokens(_gpu_batch(inputs), share, inputs.text_tokens, inputs.ulysses_degree, inputs.ring_degree)
    numel, kind = table.largest_quantised
    activations, point = block_peak(cfg, tokens, compute, inputs.attention,
                                    dq=lambda name: dequant_workspace(numel, kind))
    latent = batch * cfg.in_channels * t * h * w
    latents = 6 * latent * 4 + latent * compute.itemsize  # x, noise, velocity, step buffers (fp32) + model input
    text = 2 * batch * inputs.text_tokens * cfg.text_dim * compute.itemsize
    decode = _decode_terms(inputs, (t, h, w))
    return _Workload(activations, point, latents + text, decode)


def _gpu_batch(inputs: PlanInputs) -> int:
    """Samples one GPU's blocks run: the batch, doubled by batched true CFG, halved again by CFG parallel."""
    batch = inputs.batch * (2 if inputs.cfg_batched else 1)
    return batch // 2 if inputs.cfg_parallel else batch


def image_tokens_per_gpu(inputs: PlanInputs) -> tuple[int, int]:
    """(image tokens of the video, image tokens one GPU runs: a padded-up share under sequence parallelism)."""
    t, h, w = latent_grid(inputs)
    pt, ph, pw = inputs.config.patch_size
    image = (t // pt) * (h // ph) * (w // pw)
    return image, -(-image // (inputs.ulysses_degree * inputs.ring_degree))


def _decode_terms(inputs: PlanInputs, latent_thw: tuple[int, int, int]) -> dict[str, int]:
    """The VAE decode phase, from the VAE's own memory model (vae/memory.py)."""
    element = inputs.vae_dtype.itemsize
    tiles = tiles_of(inputs.vae_tile_px, inputs.vae_tile_frames)
    need = decode_memory(inputs.vae_config, latent_thw, tiles, element, batch=inputs.batch,
                         output_on_device=inputs.vae_output_on_device)
    terms = {"decode weights": vae_weight_bytes(inputs.vae_config, inputs.vae_dtype),
             "decode tile activations": need.tile,
             "decoded video on device": need.video}
    if inputs.gpus > 1:
        # parallel decode: rank 0 receives a round of tiles (one per GPU) plus one cut-back copy;
        # added to the tile's working memory although the two do not coincide (an overestimate)
        config = inputs.vae_config
        t, h, w = decode_tile_shape(config, latent_thw, tiles)
        s = config.spatial_compression
        tile_out = config.out_channels * config.sample_frames(t) * h * s * w * s * element
        terms["decode tiles gathered (rank 0)"] = (inputs.gpus + 1) * tile_out
    return terms


def _assemble(inputs: PlanInputs, table: WeightTable, work: _Workload) -> Plan:
    cfg = inputs.config
    n_double, n_single = min(inputs.swap_double, cfg.double_blocks), min(inputs.swap_single, cfg.single_blocks)
    swapped = ([f"double_blocks.{i}" for i in range(n_double)] + [f"single_blocks.{i}" for i in range(n_single)]
               + [n for n, on in (("txt_in", inputs.offload_txt_in), ("img_in", inputs.offload_img_in)) if on])
    resident = table.total() - sum(table.unit_bytes(u) for u in swapped)
    slot_count = 0 if not swapped else (2 if inputs.prefetch and len(swapped) > 1 else 1)
    slots = slot_count * max((packed_bytes(table.units.get(u, ())) for u in swapped), default=0)

    sampling = {"DiT weights (resident)": resident, "block swap slots": slots,
                "block activations (peak)": work.activations, "latents + text": work.latents_text}
    dit_during_decode = 0 if inputs.unload_dit_for_decode else resident + slots
    breakdown = {**sampling, **{f"VAE {k}": v for k, v in work.decode.items()}}
    sampling_peak = sum(sampling.values())
    decode_peak = sum(work.decode.values()) + dit_during_decode
    notes = []
    if (n_double, n_single) != (inputs.swap_double, inputs.swap_single):
        notes.append(f"swap counts clamped to the model's {cfg.double_blocks} + {cfg.single_blocks} blocks")
    if inputs.gpus > 1:
        image, share = image_tokens_per_gpu(inputs)
        sp = inputs.ulysses_degree * inputs.ring_degree
        padding = share * sp - image
        notes.append(f"per GPU: {share} of {image} image tokens" + (f" (padded by {padding})" if padding else "")
                     + f", {cfg.heads // inputs.ulysses_degree} of {cfg.heads} heads in attention"
                     + (f", K/V in {inputs.ring_degree} ring chunks" if inputs.ring_degree > 1 else "")
                     + f", batch {_gpu_batch(inputs)}; weights whole on every GPU")
    if inputs.attention == "sdpa":
        notes.append("sdpa assumes the fused (flash / memory-efficient) kernels; use 'sdpa_math' for the unfused path")
    peak = max(sampling_peak, decode_peak) + inputs.reserve
    breakdown["reserve (context, fragmentation)"] = inputs.reserve
    return Plan(inputs, breakdown, sampling_peak, decode_peak, peak, work.point, (n_double, n_single), notes)


def auto_swap(inputs: PlanInputs, budget: int | None = None, device="auto") -> Plan:
    """The plan with the least swapped weight bytes whose peak fits `budget` (default: the free
    memory of the main CUDA device). The returned plan's `swap` and `inputs.offload_txt_in` are
    what to install. Raises OutOfMemoryError with the most frugal plan as its suggestion when
    nothing fits."""
    if budget is None:
        budget = _free_budget(device)
    cfg = inputs.config
    compute = inputs.compute_dtype or compute_dtype_for(inputs.weight_format)
    table = inputs.weights or table_for_format(cfg, inputs.weight_format, compute)
    base = inputs.replace(weights=table)
    plan(base)  # validates the inputs
    work = _workload(base, table, compute)
    best = None
    # txt_in is offloaded only when asked for or when nothing fits without it (check plan.inputs)
    for offload_txt in ((True,) if inputs.offload_txt_in else (False, True)):
        for n_double in range(cfg.double_blocks + 1):
            for n_single in range(cfg.single_blocks + 1):
                candidate = _assemble(base.replace(swap_double=n_double, swap_single=n_single,
                                                   offload_txt_in=offload_txt), table, work)
                if candidate.fits(budget):
                    cost = _swapped_bytes(table, candidate)
                    if best is None or cost < best[0]:
                        best = (cost, candidate)
        if best is not None:
            return best[1]
    frugal = plan(base.replace(swap_double=cfg.double_blocks, swap_single=cfg.single_blocks, offload_txt_in=True))
    raise OutOfMemoryError(
        f"planner: nothing fits in {budget / GiB:.1f} GiB for {inputs.width}x{inputs.height}x{inputs.frames} "
        f"with {inputs.weight_format} weights: even swapping every block needs {frugal.peak / GiB:.1f} GiB "
        f"(block activations {frugal.breakdown['block activations (peak)'] / GiB:.1f} GiB). Use a budget of at least "
        f"{frugal.peak / GiB:.1f} GiB, or lower the resolution/frames, or smaller VAE tiles.", suggestion=frugal)


def _swapped_bytes(table: WeightTable, p: Plan) -> int:
    units = [f"double_blocks.{i}" for i in range(p.swap[0])] + [f"single_blocks.{i}" for i in range(p.swap[1])]
    units += ["txt_in"] if p.inputs.offload_txt_in else []
    return sum(table.unit_bytes(u) for u in units)


def _free_budget(device) -> int:
    from .devices import free_bytes, is_cuda, main_device
    dev = main_device(device)
    if not is_cuda(dev):
        raise InvalidInputError(
            f"auto swap: no budget given and the main device is {dev}, not a CUDA GPU; pass budget=<bytes>.")
    return int(free_bytes(dev))


def plan_for_model(model, **inputs) -> PlanInputs:
    """PlanInputs priced with the exact tensors of a loaded model (GGUF mixes, scales, adapters)."""
    from .weight_table import table_for_model
    return PlanInputs(config=model.config, weights=table_for_model(model),
                      compute_dtype=getattr(model, "compute_dtype", None), **inputs)
