"""HTTP routes the pack adds to ComfyUI's server: GET /hyvideo/plan, the memory estimate that the
frontend extension shows on the loader and sampler nodes.

    GET /hyvideo/plan?width=1280&height=720&frames=129&weight_format=fp8_e4m3fn&attention=sdpa
                     &double_blocks_to_swap=auto&single_blocks_to_swap=20&true_cfg=0&vae_tiling=auto
    200 {"peak_bytes": int, "breakdown": {name: bytes}, "fits": bool, "budget_bytes": int,
         "device": {"name", "free_bytes", "total_bytes"}, "settings": {...}, ...planner extras}
    400 {"error": "..."} for a bad parameter;  501 {"error": "..."} when the planner is missing

Every parameter is optional (defaults: the official 720p, 129 frames, bf16 settings). The
handler is built per host so it runs the same in ComfyUI (PromptServer routes) and on a bare
aiohttp app in the tests.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from typing import Callable, Mapping

from hyvideo_core.errors import HyVideoError, InvalidInputError

log = logging.getLogger(__name__)

PLAN_PATH = "/hyvideo/plan"
PLANNER_FUNCTION = ("hyvideo_core.runtime.planner", "estimate_from_settings")


@dataclass(frozen=True)
class PlanSettings:
    width: int = 1280
    height: int = 720
    frames: int = 129
    batch: int = 1
    weight_format: str = "bf16"
    attention: str = "sdpa"
    double_blocks_to_swap: int | None = 0   # None: the planner picks the smallest swap that fits
    single_blocks_to_swap: int | None = 0
    true_cfg: bool = False
    vae_tiling: str = "auto"
    budget_gb: float | None = None          # None: the device's total memory


def parse_plan_query(query: Mapping[str, str]) -> PlanSettings:
    """Query string -> PlanSettings; every bad or unknown parameter is named in the error."""
    fields = {f.name: f for f in dataclasses.fields(PlanSettings)}
    unknown = sorted(set(query) - set(fields))
    if unknown:
        raise InvalidInputError(f"plan: unknown parameter(s) {unknown}; known: {sorted(fields)}.")
    values = {}
    for name, raw in query.items():
        values[name] = _parse_value(name, raw, fields[name].default)
    for name in ("width", "height", "frames", "batch"):
        if name in values and values[name] < 1:
            raise InvalidInputError(f"plan: {name} must be at least 1, got {values[name]}.")
    return PlanSettings(**values)


def _parse_value(name: str, raw: str, default):
    try:
        if name in ("double_blocks_to_swap", "single_blocks_to_swap"):
            return None if raw == "auto" else int(raw)
        if name == "budget_gb":
            return None if raw in ("", "auto") else float(raw)
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


def default_planner() -> Callable:
    """The engine's planner function; raises ImportError/AttributeError until it exists."""
    module_name, function_name = PLANNER_FUNCTION
    return getattr(importlib.import_module(module_name), function_name)


def plan_response(settings: PlanSettings, planner: Callable, host) -> dict:
    main, _ = host.devices()
    free, total = host.device_memory(main)
    budget = int(settings.budget_gb * 1024**3) if settings.budget_gb is not None else total
    arguments = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "budget_gb"}
    plan = planner(**arguments, budget_bytes=budget)
    result = plan.to_dict() if hasattr(plan, "to_dict") else dataclasses.asdict(plan)
    peak = int(result["peak_bytes"])
    return {**result, "peak_bytes": peak, "budget_bytes": budget, "fits": peak <= budget,
            "device": {"name": str(main), "free_bytes": free, "total_bytes": total},
            "settings": dataclasses.asdict(settings)}


def make_plan_handler(host, planner: Callable | None = None):
    async def plan_handler(request):
        from aiohttp import web  # only when serving: the CLI does not need aiohttp

        try:
            settings = parse_plan_query(request.query)
        except InvalidInputError as error:
            return web.json_response({"error": str(error)}, status=400)
        try:
            chosen = planner or default_planner()
        except (ImportError, AttributeError) as error:
            return web.json_response({"error": f"memory planner not available in this version of the pack "
                                               f"({type(error).__name__}: {error})."}, status=501)
        try:
            return web.json_response(plan_response(settings, chosen, host))
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
