"""The pack's UI workflows in the real ComfyUI frontend, in headless Chromium (optional).

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/venv/bin/python \
        python -m pytest tests/test_comfyui_frontend.py

Needs COMFYUI_PATH, node, Chromium (`apt-get install chromium`; CHROMIUM_PATH to use another) and
playwright-core (`cd tests/browser && npm install`); skips naming whatever is missing, or, when CI
is set, fails naming it (.ci/run installs all of them). ComfyUI is
started as in test_comfyui_real.py (tests/comfyui_server.py: the pack linked in, tiny models under
the workflows' file names so their combos hold valid values). tests/browser/load_workflows.mjs
opens the frontend, waits for our extension, loads every workflows/*.json with app.loadGraphData,
types a width into a sampler and reports what the frontend built; the tests here judge that report.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from comfyui_server import host_missing, log_tail, require, running_comfyui, unless_present
from harness import load_json, load_pack, prompt_differences, ui_workflows

BROWSER_DIR = Path(__file__).parent / "browser"
SCRIPT = BROWSER_DIR / "load_workflows.mjs"
SCRIPT_TIMEOUT = 180
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
SEED_INPUTS = {"seed", "noise_seed"}   # their control_after_generate may change them; compared loosely


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


def missing_requirements() -> list[str]:
    missing = host_missing()
    if shutil.which("node") is None:
        missing.append("node")
    if chromium_path() is None:
        missing.append("chromium (apt-get install chromium, or set CHROMIUM_PATH)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (cd tests/browser && npm install)")
    return missing


MISSING = missing_requirements()
pytestmark = unless_present(MISSING)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    require(MISSING)
    with running_comfyui(tmp_path_factory.mktemp("comfyui_frontend")) as server:
        done = subprocess.run(["node", str(SCRIPT), server["url"], *map(str, ui_workflows())], cwd=BROWSER_DIR,
                              capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
                              env={**os.environ, "CHROMIUM_PATH": chromium_path()})
        assert done.returncode == 0, f"{done.stderr[-4000:]}\n--- ComfyUI log ---\n{log_tail(server)}"
        result = json.loads(done.stdout)
    result["by_name"] = {w["name"]: w for w in result["workflows"]}
    return result


def has_our_sampler(path: Path) -> bool:
    return any(n["type"] == "HyVideoSampler" for n in load_json(path)["nodes"])


@pytest.fixture(params=ui_workflows(), ids=lambda p: p.stem)
def loaded(request, report) -> tuple[dict, dict]:
    """(the UI workflow file, what the frontend made of it)."""
    return load_json(request.param), report["by_name"][request.param.stem]


# The workflows sampled by our HyVideoSampler (the others use ComfyUI's native samplers).
@pytest.fixture(params=[p for p in ui_workflows() if has_our_sampler(p)], ids=lambda p: p.stem)
def loaded_with_our_sampler(request, report) -> tuple[dict, dict]:
    return load_json(request.param), report["by_name"][request.param.stem]


def our_events(events: list[dict]) -> list[str]:
    return [f"{e['kind']}: {e['text'][:500]}" for e in events if e["ours"]]


def test_frontend_starts_with_our_extension_and_no_errors_from_it(report):
    assert all(w["extensionRegistered"] for w in report["workflows"])
    assert our_events(report["startup"]["events"]) == []


def test_workflow_loads_without_missing_nodes_or_dialogs(loaded):
    _, got = loaded
    assert got["unregistered"] == [], "node types not in LiteGraph.registered_node_types"
    assert got["missingNodeTypes"] == [], "the frontend reported missing node types"
    assert got["dialogs"] == [], "the load opened a dialog (missing nodes / models, load error)"


def test_loaded_graph_has_the_files_nodes_and_links(loaded):
    workflow, got = loaded
    assert sorted((n["id"], n["type"], n.get("mode", 0)) for n in workflow["nodes"]) == \
        sorted((n["id"], n["type"], n["mode"]) for n in got["nodes"])
    assert sorted(map(tuple, workflow["links"])) == sorted(map(tuple, got["links"]))


def widget_problem(w: dict) -> str | None:
    """Why the frontend's widget `w` cannot hold its value (None if it can): a value saved for
    another widget shows up here as a string in a number, a number in a combo, and so on."""
    value = w["value"]
    if w["type"] == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "not a number"
        if (w["min"] is not None and value < w["min"]) or (w["max"] is not None and value > w["max"]):
            return f"outside {w['min']}..{w['max']}"
    elif w["type"] == "toggle" and not isinstance(value, bool):
        return "not a boolean"
    elif w["type"] == "combo" and value not in (w["choices"] or []):
        return f"not among {(w['choices'] or [])[:20]}"
    elif w["type"] in ("text", "customtext", "string") and not isinstance(value, str):
        return "not a string"
    return None


def test_our_widgets_hold_the_files_values_in_order(loaded):
    """widgets_values are positional: each lands on the widget it was saved from, and every
    widget accepts its value (a shifted list puts 'euler' into a number, a width into a combo)."""
    workflow, got = loaded
    nodes = {n["id"]: n for n in got["nodes"]}
    pack_types = set(load_pack().NODE_CLASS_MAPPINGS)
    checked = 0
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        live = nodes[node["id"]]
        where = f"node {node['id']} ({node['type']})"
        # ComfyUI's own nodes (native sampler workflows) are checked too, but are not ours to set up.
        assert live["ours"] == (node["type"] in pack_types), f"{where}: set up by our extension: {live['ours']}"
        values = node.get("widgets_values", [])
        saved = [w for w in live["widgets"] if w["saved"]]
        shown = [(w["name"], w["value"]) for w in saved]
        assert len(saved) >= len(values), f"{where}: {len(values)} file values for widgets {shown}"
        # The frontend also saves an upload button's value ("image"); files without it load the same.
        assert all(w["type"] == "button" for w in saved[len(values):]), f"{where}: no file values for {shown}"
        assert [w["value"] for w in saved[:len(values)]] == values, f"{where}: widgets {shown} vs file {values}"
        assert live["widgets_values"][:len(values)] == values
        problems = [f"{w['name']}={w['value']!r}: {widget_problem(w)}" for w in saved[:len(values)] if widget_problem(w)]
        assert problems == [], f"{where}: {problems}"
        checked += live["ours"]
    assert checked >= 5


def without_seeds(prompt: dict) -> dict:
    return {k: {**n, "inputs": {name: v for name, v in n["inputs"].items() if name not in SEED_INPUTS}}
            for k, n in prompt.items()}


def test_graph_to_prompt_matches_the_api_twin(loaded):
    workflow, got = loaded
    twin = load_json(Path(__file__).parents[1] / "workflows" / "api" / f"{got['name']}.json")
    assert prompt_differences(without_seeds(twin), without_seeds(got["prompt"])) == []
    for node_id, node in twin.items():
        for name in SEED_INPUTS & set(node["inputs"]):
            assert isinstance(got["prompt"][node_id]["inputs"][name], int)


def test_extension_shows_the_plan_for_this_graph_on_loader_and_sampler(loaded):
    workflow, got = loaded
    shows = {n["id"]: n["type"] for n in got["nodes"] if n["showsPlan"]}
    present = {n["type"] for n in workflow["nodes"]}
    assert "HyVideoModelLoader" in present
    assert {"HyVideoModelLoader", "HyVideoSampler"} & present <= set(shows.values())
    assert got["settledAfterLoad"], "estimate requests did not settle"
    assert got["planCallsOnLoad"], "the extension never called GET /hyvideo/plan"
    assert all(call["status"] == 200 for call in got["planCallsOnLoad"]), got["planCallsOnLoad"]
    sampler = next((n for n in workflow["nodes"] if n["type"] == "HyVideoSampler"), None)
    for node_id, node_type in shows.items():
        plan = got["plans"][str(node_id)]
        assert plan and plan.get("peak_bytes", 0) > 0, f"node {node_id} ({node_type}) has no estimate: {plan}"
        if sampler is not None:   # with a native sampler the size is not read from the graph
            width, height, frames = sampler["widgets_values"][:3]
            assert plan["summary"].startswith(f"{width}x{height}x{frames} "), \
                f"node {node_id} ({node_type}) shows an estimate for another size: {plan['summary'][:80]}"


def test_sampler_width_snaps_to_a_multiple_of_16_and_refreshes_the_plan(loaded_with_our_sampler):
    _, got = loaded_with_our_sampler
    snap = got["snap"]
    assert snap and snap["type"] == "HyVideoSampler"
    assert (snap["typed"], snap["value"]) == (1000, 1008)
    widths = [parse_qs(call["query"].lstrip("?")).get("width") for call in got["planCallsAfterSnap"]]
    assert ["1008"] in widths, f"no estimate asked for the snapped width: {got['planCallsAfterSnap']}"


def test_no_errors_from_our_extension_while_loading(loaded):
    _, got = loaded
    assert our_events(got["events"]) == []


def test_estimate_requests_after_a_quick_reload_describe_the_new_graph(report):
    reload = report["quickReload"]
    assert reload and reload["settled"]
    own = {call["query"] for call in report["by_name"][reload["to"]]["planCallsOnLoad"]}
    stale = sorted(set(reload["queries"]) - own)
    assert stale == [], f"after loading {reload['from']} then {reload['to']}, requests not from {reload['to']}: {stale}"


def test_plan_summary_names_the_size_first(report):
    """The size check above reads the planner's summary: keep its format pinned here."""
    summary = next(iter(report["workflows"][0]["plans"].values()))["summary"]
    assert re.match(r"\d+x\d+x\d+ ", summary), summary
