"""The pack's nodes give the frontend extension (web/js) what it expects: pack nodes found by
category / id, the widget names it snaps and reads, and widget values that the plan route prices
for every choice a user can make on the loader, block swap, sampler and decode nodes."""
from __future__ import annotations

import pytest

from harness import contract, load_pack, pack_module

pack = load_pack()
NODES = pack.NODE_CLASS_MAPPINGS
routes = pack_module("nodes.routes")

# web/js/hyvideo_logic.js PLAN_PARAMETERS: query parameter -> widget names, first match wins.
PLAN_PARAMETERS = {
    "width": ["width"], "height": ["height"], "frames": ["frames", "length", "num_frames", "video_length"],
    "batch": ["batch_size", "batch"], "weight_format": ["weight_format", "quantization"],
    "attention": ["attention", "attention_mode"], "double_blocks_to_swap": ["double_blocks_to_swap"],
    "single_blocks_to_swap": ["single_blocks_to_swap"], "true_cfg": ["true_cfg_scale", "cfg_scale"],
    "vae_tiling": ["vae_tiling", "tiling"], "budget_gb": ["vram_budget_gb", "budget_gb"],
}


def plan_query(widget_maps: list[dict]) -> dict[str, str]:
    """hyvideo_logic.js planQuery, in Python."""
    merged = {}
    for widgets in widget_maps:
        for name, value in widgets.items():
            merged.setdefault(name, value)
    query = {}
    for parameter, names in PLAN_PARAMETERS.items():
        name = next((n for n in names if merged.get(n) not in (None, "")), None)
        if name is None:
            continue
        value = merged[name]
        if parameter == "true_cfg":
            value = "true" if float(value) > 1 else "false"
        query[parameter] = str(value).lower() if isinstance(value, bool) else str(value)
    return query


def widgets(node_id: str, **values) -> dict:
    found = {w.name: w.options.get("default", w.choices[0] if w.choices else None)
             for w in contract.widget_inputs(NODES[node_id])}
    return {**found, **values}


def choices(node_id: str, name: str) -> tuple:
    return next(w.choices for w in contract.widget_inputs(NODES[node_id]) if w.name == name)


def test_every_node_is_found_by_the_extension():
    for node_id, cls in NODES.items():
        assert node_id.startswith("HyVideo") and cls.CATEGORY.startswith("HunyuanVideo/"), node_id


def test_snapped_widgets_are_declared_as_the_extension_snaps_them():
    for node_id in ("HyVideoSampler", "HyVideoKeyframeEncode", "HyVideoMemoryPlan"):
        specs = {w.name: w.options for w in contract.widget_inputs(NODES[node_id])}
        assert specs["frames"]["min"] == 1 and specs["frames"]["step"] == 4 and (specs["frames"]["default"] - 1) % 4 == 0
        for name in ("width", "height"):
            assert specs[name]["step"] == 16 and specs[name]["min"] == 16 and specs[name]["default"] % 16 == 0
    # Widgets that take 0 must not carry a name the extension snaps (it would turn 0 into 16).
    for node_id, cls in NODES.items():
        for w in contract.widget_inputs(cls):
            if w.name in ("width", "height", "frames", "length", "num_frames", "video_length"):
                assert w.options["min"] >= 1, f"{node_id}.{w.name}"


def test_the_widgets_the_plan_reads_exist():
    names = {w.name for cls in NODES.values() for w in contract.widget_inputs(cls)}
    for needed in ("width", "height", "frames", "weight_format", "attention", "double_blocks_to_swap",
                   "single_blocks_to_swap", "true_cfg_scale", "tiling", "vram_budget_gb"):
        assert needed in names


@pytest.fixture(scope="module")
def planner():
    return routes.default_planner


def every_choice_once(first: tuple, second: tuple) -> list[tuple]:
    """Pairs in which every value of both lists appears (not the full product: each answer is independent)."""
    count = max(len(first), len(second))
    return [(first[i % len(first)], second[i % len(second)]) for i in range(count)]


@pytest.mark.parametrize("weight_format, attention", every_choice_once(
    choices("HyVideoModelLoader", "weight_format"), choices("HyVideoModelLoader", "attention")))
def test_the_plan_route_prices_every_loader_choice(planner, weight_format, attention):
    graph = [widgets("HyVideoSampler", true_cfg_scale=3.0), widgets("HyVideoModelLoader", weight_format=weight_format,
                                                                   attention=attention),
             widgets("HyVideoBlockSwap"), widgets("HyVideoVAEDecode", tiling="custom")]
    query = plan_query(graph)
    assert query["double_blocks_to_swap"] == "-1" and query["budget_gb"] == "0.0" and query["true_cfg"] == "true"
    answer = routes.plan_response(routes.parse_plan_query(query), planner, pack.nodes.host.host)
    assert answer["peak_bytes"] > 0 and answer["settings"]["width"] == 960
    assumed = " ".join(answer["notes"])
    assert ("weight_format" in assumed) == (weight_format in ("auto", "gguf"))
    assert ("attention auto" in assumed) == (attention == "auto") and "custom decode tiles" in assumed


@pytest.mark.parametrize("tiling", ["auto", "off", "custom"])
def test_the_plan_route_prices_every_decode_tiling(planner, tiling):
    query = plan_query([widgets("HyVideoSampler"), widgets("HyVideoVAEDecode", tiling=tiling)])
    answer = routes.plan_response(routes.parse_plan_query(query), planner, pack.nodes.host.host)
    assert answer["peak_bytes"] > 0
