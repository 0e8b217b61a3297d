"""HTTP routes the pack adds to ComfyUI's server: GET /hyvideo/plan, the memory estimate that the
frontend extension shows on the loader and sampler nodes.

    GET /hyvideo/plan?width=1280&height=720&frames=129&weight_format=fp8_e4m3fn&attention=sdpa
                     &double_blocks_to_swap=auto&single_blocks_to_swap=20&true_cfg=0&vae_tiling=auto
    200 {"peak_bytes": int, "breakdown": {name: bytes}, "fits": bool, "budget_bytes": int,
         "swap": {"double", "single"}, "notes": [...], "summary": str, "message"?: str (nothing fits),
         "device": {"name", "free_bytes", "total_bytes"}, "settings": {...}}
    400 {"error": "..."} for a bad parameter

Every parameter is optional (defaults: the run defaults, 960x544x129, bf16); a swap
count of `auto` (or a negative one, as the Block Swap node writes it) picks the least swapping
that fits the budget (budget_gb GiB of the main device; unset or 0 = its total memory, the one
meaning of a budget everywhere in the pack). Widget values of the pack's
nodes that the planner cannot price directly are mapped and the assumption is added to `notes`:
weight_format auto -> bf16 (the common file), gguf -> Q4_K, *_fast -> the plain fp8 type;
attention auto -> sdpa; vae_tiling custom -> the default tiles. The handler is built per host so it
runs the same in ComfyUI (PromptServer routes) and on a bare aiohttp app in the tests.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Mapping

from hyvideo_core.errors import HyVideoError, InvalidInputError, OutOfMemoryError
from hyvideo_core.run import PlanInputs, SwapRequest, budget_bytes, check_budget, check_size, plan_placement
from hyvideo_core.run.choices import DEFAULTS

log = logging.getLogger(__name__)

PLAN_PATH = "/hyvideo/plan"


@dataclass(frozen=True)
class PlanSettings:
    width: int = DEFAULTS.width
    height: int = DEFAULTS.height
    frames: int = DEFAULTS.frames
    batch: int = 1
    weight_format: str = "bf16"
    attention: str = "sdpa"
    double_blocks_to_swap: int | None = 0   # None: the planner picks the smallest swap that fits
    single_blocks_to_swap: int | None = 0
    true_cfg: bool = False
    vae_tiling: str = "auto"
    budget_gb: float | None = None          # None: the device's total memory
    assumptions: tuple[str, ...] = ()       # widget values mapped to what the planner prices


def parse_plan_query(query: Mapping[str, str]) -> PlanSettings:
    """Query string -> PlanSettings; every bad or unknown parameter is named in the error."""
    fields = {f.name: f for f in dataclasses.fields(PlanSettings) if f.name != "assumptions"}
    unknown = sorted(set(query) - set(fields))
    if unknown:
        raise InvalidInputError(f"plan: unknown parameter(s) {unknown}; known: {sorted(fields)}.")
    values = {}
    for name, raw in query.items():
        values[name] = _parse_value(name, raw, fields[name].default)
    if values.get("batch", 1) < 1:
        raise InvalidInputError(f"plan: batch must be at least 1, got {values['batch']}.")
    size = check_size(*(values.get(k, getattr(PlanSettings, k)) for k in ("width", "height", "frames")),
                      ("plan: width", "plan: height", "plan: frames"))   # snapped as the sampler snaps
    values.update(width=size.width, height=size.height, frames=size.frames)
    values, assumptions = _widget_values_for_planner(values)
    settings = PlanSettings(**values, assumptions=size.adjustments + assumptions)
    vae_tiles(settings.vae_tiling)
    return settings


# Node widget values -> what the planner prices, with the assumption made.
_ASSUMED = {
    ("weight_format", "auto"): ("bf16", "weight_format auto: priced as bf16 (the usual file; connect the model to "
                                        "a Memory Plan node for its exact weights)"),
    ("weight_format", "gguf"): ("Q4_K", "weight_format gguf: priced as Q4_K (the quant depends on the file)"),
    ("attention", "auto"): ("sdpa", "attention auto: priced as sdpa"),
    ("vae_tiling", "custom"): ("auto", "custom decode tiles: priced with the default 256 px / 64-frame tiles"),
}


def _widget_values_for_planner(values: dict) -> tuple[dict, tuple[str, ...]]:
    notes = []
    for name in ("weight_format", "attention", "vae_tiling"):
        if (name, values.get(name)) in _ASSUMED:
            values[name], note = _ASSUMED[(name, values[name])]
            notes.append(note)
    if str(values.get("weight_format", "")).endswith("_fast"):
        values["weight_format"] = values["weight_format"].removesuffix("_fast")
    return values, tuple(notes)


def _parse_value(name: str, raw: str, default):
    try:
        if name in ("double_blocks_to_swap", "single_blocks_to_swap"):
            return None if raw == "auto" or int(raw) < 0 else int(raw)
        if name == "budget_gb":
            return None if raw in ("", "auto") else check_budget(float(raw), "plan: budget_gb")
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true")
        if isinstance(default, int):
            return int(raw)
        return raw
    except ValueError:
        raise InvalidInputError(f"plan: {name}={raw!r} is not a valid value "
                                f"(expected something like {default!r}).") from None


def default_planner(settings: PlanSettings, budget: int | None) -> dict:
    """The engine's plan for the route's settings (auto swap: the least that fits the budget)."""
    import torch

    tile_px, tile_frames = vae_tiles(settings.vae_tiling)
    inputs = PlanInputs(weight_format=settings.weight_format, width=settings.width, height=settings.height,
                        frames=settings.frames, batch=settings.batch, cfg_batched=settings.true_cfg,
                        attention=settings.attention, vae_tile_px=tile_px, vae_tile_frames=tile_frames)
    swap = SwapRequest.counts(settings.double_blocks_to_swap, settings.single_blocks_to_swap)
    try:
        placement = plan_placement(inputs, swap, budget, torch.device("cuda" if budget else "cpu"))
        return {**plan_to_dict(placement.plan), **({"message": placement.note} if placement.note else {})}
    except OutOfMemoryError as error:  # nothing fits: show the most frugal plan and why
        return {**plan_to_dict(error.suggestion), "message": str(error)}


def vae_tiles(vae_tiling: str) -> tuple[int | None, int | None]:
    """'auto' (the engine's default tiles) | 'off' | '<pixels>,<frames>'."""
    if vae_tiling == "auto":
        return 256, 64
    if vae_tiling == "off":
        return None, None
    try:
        pixels, frames = (int(part) for part in vae_tiling.split(","))
        return pixels, frames
    except ValueError:
        raise InvalidInputError(f"plan: vae_tiling={vae_tiling!r}; use 'auto', 'off' or '<pixels>,<frames>' "
                                f"such as '256,64'.") from None


def plan_to_dict(plan) -> dict:
    return {"peak_bytes": int(plan.peak), "breakdown": {k: int(v) for k, v in plan.breakdown.items()},
            "sampling_peak_bytes": int(plan.sampling_peak), "decode_peak_bytes": int(plan.decode_peak),
            "peak_point": plan.peak_point, "swap": {"double": plan.swap[0], "single": plan.swap[1]},
            "notes": list(plan.notes), "summary": plan.describe()}


def plan_response(settings: PlanSettings, planner: Callable[[PlanSettings, int], dict], host) -> dict:
    main, _ = host.devices()
    free, total = host.device_memory(main)
    budget = budget_bytes(settings.budget_gb, main, total or None)
    result = planner(settings, budget)
    peak = int(result["peak_bytes"])
    notes = [*settings.assumptions, *result.get("notes", [])]
    return {**result, "notes": notes, "peak_bytes": peak, "budget_bytes": budget,
            "fits": budget is None or peak <= budget,
            "device": {"name": str(main), "free_bytes": free, "total_bytes": total},
            "settings": dataclasses.asdict(settings)}


def make_plan_handler(host, planner: Callable | None = None):
    plans: dict[tuple, dict] = {}   # recent plans: the frontend asks again on every widget edit

    def answer(settings: PlanSettings, chosen) -> dict:
        def cached(s: PlanSettings, budget: int) -> dict:
            key = (s, budget, chosen)
            if key not in plans:
                if len(plans) >= 64:
                    plans.pop(next(iter(plans)))
                plans[key] = chosen(s, budget)
            return plans[key]
        return plan_response(settings, cached, host)

    async def plan_handler(request):
        from aiohttp import web  # only when serving: the CLI does not need aiohttp

        try:
            settings = parse_plan_query(request.query)
        except InvalidInputError as error:
            return web.json_response({"error": str(error)}, status=400)
        chosen = planner or default_planner
        try:
            # The planner searches swap counts (~0.5 s on a CPU): off the server's event loop, so
            # progress and websocket traffic keep flowing.
            result = await asyncio.get_running_loop().run_in_executor(None, answer, settings, chosen)
            return web.json_response(result)
        except HyVideoError as error:
            return web.json_response({"error": str(error)}, status=400)

    return plan_handler


def routes(host, planner: Callable | None = None) -> list[tuple[str, str, Callable]]:
    return [("GET", PLAN_PATH, make_plan_handler(host, planner))]


def add_routes(target, host, planner: Callable | None = None) -> None:
    """Mount the routes on an aiohttp RouteTableDef, Application or UrlDispatcher."""
    for method, path, handler in routes(host, planner):
        if hasattr(target, "route"):          # RouteTableDef (what PromptServer.instance.routes is)
            target.route(method, path)(handler)
        elif hasattr(target, "router"):       # web.Application
            target.router.add_route(method, path, handler)
        else:                                 # UrlDispatcher
            target.add_route(method, path, handler)


def register(host, planner: Callable | None = None) -> None:
    """Called by the pack root at import: hands the routes to the host (ComfyUI's server)."""
    for method, path, handler in routes(host, planner):
        host.register_route(method, path, handler)
