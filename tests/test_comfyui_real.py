"""The pack inside a real ComfyUI (skipped unless COMFYUI_PATH points at a ComfyUI checkout;
failed instead when CI is set, see tests/comfyui_server.py; .ci/run sets everything up).

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/venv/bin/python pytest tests/test_comfyui_real.py

ComfyUI is started on 127.0.0.1 (a free port) with --cpu, a temporary base directory, and an
extra-model-paths yaml that lists a temporary custom_nodes folder holding a symlink to this pack
and model folders holding tiny models under the public file names the workflows use. Only the
process started here is stopped.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from comfyui_server import (PACK_FOLDER, RUN_TIMEOUT, host_missing, http, log_tail, require, run_prompt,
                            running_comfyui, unless_present)
from harness import SMALL_SETTINGS, api_workflows, file_inputs, load_json, load_pack, with_inputs
from harness_example_nodes import example_prompt

MISSING = host_missing()
pytestmark = unless_present(MISSING)

# A second pack with the harness's example nodes: they reach ComfyUI only through our host,
# so running them checks nodes/host.py's ComfyUI side (folders, progress, previews, interrupt).
EXAMPLES_PACK = (f"import sys\nsys.path.append({str(Path(__file__).parent)!r})\n"
                 "from harness.pack import load_pack\nload_pack()  # makes hyvideo_core importable\n"
                 "from harness_example_nodes import NODES as NODE_CLASS_MAPPINGS\n")
# A pass-through node for the out-of-memory test: the model it returns is a copy of the loader's
# (whose output ComfyUI caches for the other tests) whose DiT raises torch's CUDA OOM when called.
OUT_OF_MEMORY_PACK = '''import copy
from dataclasses import replace

import torch


class HyVideoTestOutOfMemory:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("HYVIDEO_MODEL", {"tooltip": "A loaded model."})}}
    RETURN_TYPES = ("HYVIDEO_MODEL",)
    FUNCTION = "patch"
    CATEGORY = "tests"

    def patch(self, model):
        loaded = copy.deepcopy(model.loaded)

        def out_of_memory(*args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        loaded.transformer.forward = out_of_memory
        return (replace(model, loaded=loaded),)


NODE_CLASS_MAPPINGS = {"HyVideoTestOutOfMemory": HyVideoTestOutOfMemory}
'''


def small_prompt(path: Path) -> dict:
    return with_inputs(load_json(path), SMALL_SETTINGS)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    require(MISSING)
    with running_comfyui(tmp_path_factory.mktemp("comfyui"), {"hyvideo_examples.py": EXAMPLES_PACK,
                                                              "hyvideo_test_oom.py": OUT_OF_MEMORY_PACK}) as server:
        yield server


def test_object_info_lists_every_node_and_the_web_extension(comfy):
    pack = load_pack()
    status, info = asyncio.run(http(comfy, "GET", "/object_info"))
    assert status == 200
    missing = sorted(set(pack.NODE_CLASS_MAPPINGS) - set(info))
    assert missing == [], f"not registered: {missing}\n{log_tail(comfy)}"
    for node_id in pack.NODE_CLASS_MAPPINGS:
        assert info[node_id]["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        assert info[node_id]["display_name"] == pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert "IMPORT FAILED" not in Path(comfy["log"]).read_text(errors="replace")
    _, extensions = asyncio.run(http(comfy, "GET", "/extensions"))
    assert f"/extensions/{PACK_FOLDER}/hyvideo.js" in extensions


def test_plan_route_is_served_by_comfyui(comfy):
    status, body = asyncio.run(http(comfy, "GET", "/api/hyvideo/plan?width=960&height=544&frames=129"))
    assert status in (200, 501), body  # 501 until the engine's planner lands
    assert ("peak_bytes" in body) if status == 200 else ("planner not available" in body["error"])
    status, body = asyncio.run(http(comfy, "GET", "/hyvideo/plan?width=abc"))
    assert status == 400 and "width" in body["error"]


@pytest.mark.parametrize("workflow", api_workflows(), ids=lambda p: p.stem)
def test_api_workflow_runs_to_completion(comfy, workflow):
    history, events = asyncio.run(run_prompt(comfy, small_prompt(workflow)))
    types = [e["type"] for e in events]
    assert history.get("status", {}).get("status_str") == "success", f"{types}\n{events[-1:]}\n{log_tail(comfy)}"
    files = [item for ui in history["outputs"].values() for key in ("videos", "images", "gifs")
             for item in ui.get(key, [])]
    assert files, f"no output files in {history['outputs']}"
    for item in files:
        path = comfy["output"] / item.get("subfolder", "") / item["filename"]
        assert path.is_file() and path.stat().st_size > 0


def test_missing_model_file_is_a_node_error_naming_the_folders(comfy):
    prompt = small_prompt(api_workflows()[0])
    name = sorted(file_inputs(prompt))[0]
    for node in prompt.values():
        node["inputs"] = {k: ("no_such_model.safetensors" if v == name else v) for k, v in node["inputs"].items()}
    status, body = asyncio.run(http(comfy, "POST", "/prompt", {"prompt": prompt}))
    assert status == 400
    errors = [e for entry in body["node_errors"].values() for e in entry["errors"]]
    refused = [e for e in errors if "no_such_model.safetensors" in e["details"]]
    assert refused and refused[0]["type"] == "custom_validation_failed"
    assert "folders searched" in refused[0]["details"] and str(comfy["models"]) in refused[0]["details"]


def test_native_empty_latent_feeds_our_sampler(comfy):
    """ComfyUI's own EmptyHunyuanLatentVideo -> our sampler -> our decode: the LATENT conventions agree."""
    prompt = small_prompt(next(p for p in api_workflows() if p.stem == "hunyuan_video_t2v_80gb"))
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "HyVideoSampler")
    prompt["90"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 48, "height": 32, "length": 9,
                                                                         "batch_size": 1}}
    prompt[sampler]["inputs"]["samples"] = ["90", 0]
    history, events = asyncio.run(run_prompt(comfy, prompt))
    assert history["status"]["status_str"] == "success", f"{events[-1:]}\n{log_tail(comfy)}"
    text = "\n".join(history["outputs"][sampler]["text"])
    assert text.startswith("48x32x9") and "only its shape is used" in text
    assert sum(e["type"] == "binary_preview" for e in events) >= 1   # latent previews reached the browser


def test_interrupt_during_a_long_run_leaves_no_video(comfy):
    samplers = [p for p in api_workflows() if any("steps" in n["inputs"] for n in load_json(p).values())]
    if not samplers:
        pytest.skip("no API workflow with a sampler (a 'steps' input) yet")
    prompt = with_inputs(small_prompt(samplers[0]), {"steps": 500})
    before = set(comfy["output"].rglob("*")) if comfy["output"].exists() else set()
    started = time.monotonic()
    history, events = asyncio.run(run_prompt(comfy, prompt, interrupt_after_progress=True))
    assert events[-1]["type"] == "execution_interrupted", [e["type"] for e in events]
    assert time.monotonic() - started < RUN_TIMEOUT
    assert history.get("status", {}).get("status_str") == "error"
    after = set(comfy["output"].rglob("*")) if comfy["output"].exists() else set()
    assert after == before, f"files left behind: {sorted(map(str, after - before))}"


def test_host_inside_comfyui_runs_caches_previews_and_saves(comfy):
    first, events = asyncio.run(run_prompt(comfy, example_prompt(strength=1.0)))
    assert first["status"]["status_str"] == "success", f"{events[-1:]}\n{log_tail(comfy)}"
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [(p["node"], p["value"], p["max"]) for p in progress] == [("3", 1, 2), ("3", 2, 2)]
    assert sum(e["type"] == "binary_preview" for e in events) == 2  # one JPEG preview per step
    video = first["outputs"]["4"]["videos"][0]
    assert (comfy["output"] / video["filename"]).stat().st_size > 0
    assert first["outputs"]["5"] == {"text": ["0.5"]}
    # Same semantics as the harness: a changed strength re-runs downstream only; the loader is cached.
    _, events = asyncio.run(run_prompt(comfy, example_prompt(strength=0.5)))
    cached = next(e["data"]["nodes"] for e in events if e["type"] == "execution_cached")
    executed = [e["data"]["node"] for e in events if e["type"] == "executing" and e["data"]["node"]]
    assert sorted(cached) == ["1", "5"] and executed == ["2", "3", "4"]


def test_unknown_model_file_is_refused_with_the_available_ones(comfy):
    prompt = example_prompt()
    del prompt["5"]  # with another valid sink ComfyUI would answer 200 and run that one
    prompt["1"]["inputs"]["unet_name"] = "hunyuan_video_t2v_720p_fp8_missing.safetensors"
    status, body = asyncio.run(http(comfy, "POST", "/prompt", {"prompt": prompt}))
    assert status == 400
    error = body["node_errors"]["1"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert "hunyuan_video_t2v_720p_fp8_missing.safetensors" in error["details"] and "tiny_dit.safetensors" in error["details"]


def test_interrupt_inside_comfyui_stops_our_node_and_leaves_no_video(comfy):
    before = set(comfy["output"].rglob("*"))
    prompt = example_prompt(steps=400, seed=11)
    del prompt["5"]
    history, events = asyncio.run(run_prompt(comfy, prompt, interrupt_after_progress=True))
    assert events[-1]["type"] == "execution_interrupted" and events[-1]["data"]["node_id"] == "3"
    assert sum(e["type"] == "progress" for e in events) < 400
    assert history["status"]["status_str"] == "error"
    assert set(comfy["output"].rglob("*")) == before


def test_an_out_of_memory_in_sampling_reaches_the_comfyui_user_as_the_planners_advice(comfy):
    """Issue #12: a device OOM inside sampling reaches the user as the planner's message, in the
    real host (the same check as test_run_layer's in the harness). The patched DiT is a copy, so
    the loader's cached model stays usable; kept last all the same."""
    prompt = small_prompt(next(p for p in api_workflows() if p.stem == "hunyuan_video_t2v_80gb"))
    loader = next(k for k, n in prompt.items() if n["class_type"] == "HyVideoModelLoader")
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "HyVideoSampler")
    prompt["91"] = {"class_type": "HyVideoTestOutOfMemory", "inputs": {"model": [loader, 0]}}
    prompt[sampler]["inputs"]["model"] = ["91", 0]
    before = set(comfy["output"].rglob("*"))
    history, events = asyncio.run(run_prompt(comfy, prompt))
    assert events[-1]["type"] == "execution_error", f"{[e['type'] for e in events]}\n{log_tail(comfy)}"
    error = events[-1]["data"]
    assert error["node_id"] == sampler and error["node_type"] == "HyVideoSampler"
    assert error["exception_type"].endswith("OutOfMemoryError")
    message = error["exception_message"]
    assert "The planner predicts a peak of" in message and "during sampling" in message, message
    assert history["status"]["status_str"] == "error"
    recorded = [data for kind, data in history["status"]["messages"] if kind == "execution_error"]
    assert recorded and recorded[0]["exception_message"] == message
    assert set(comfy["output"].rglob("*")) == before
