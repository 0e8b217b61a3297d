"""Every shipped workflow, in the harness: each workflows/api/*.json runs end to end with tiny
models written under its public file names (and small images / videos under the input names it
loads), and each UI workflow workflows/NAME.json converts (node types, links, widget order incl.
control_after_generate) to its twin workflows/api/NAME.json."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness import (SMALL_SETTINGS, api_workflows, file_inputs, load_json, load_pack, media_inputs, pack_runner,
                     prompt_differences, ui_to_api, ui_workflows, with_inputs)
from harness.contract import widget_inputs
from hyvideo_core.video import read_video
from tiny_models import write_inputs, write_models

OUTPUT_KEYS = ("videos", "images", "gifs")
# Workflows of ComfyUI's own nodes (SamplerCustomAdvanced, KSampler, Context Windows) on our native MODEL:
# the harness has no ComfyUI, so tests/test_comfyui_native.py runs and converts them in the real host.
NATIVE = {"hunyuan_video_native_sampler", "hunyuan_video_native_context_windows"}
EXPECTED = {"hunyuan_video_t2v_80gb", "hunyuan_video_t2v_24gb", "hunyuan_video_t2v_gguf", "hunyuan_video_lora",
            "hunyuan_video_keyframe", "hunyuan_video_v2v", "hunyuan_video_t2v_2gpu",
            "hunyuan_video_long_257", "hunyuan_video_i2v_720p_24gb", *NATIVE}


def pack_only(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.stem not in NATIVE]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


def test_the_promised_workflows_are_shipped():
    assert {p.stem for p in api_workflows()} == EXPECTED


@pytest.mark.parametrize("workflow", pack_only(api_workflows()), ids=lambda p: p.stem)
def test_api_workflow_runs_end_to_end(workflow, tmp_path, tiny_cache):
    prompt = with_inputs(load_json(workflow), SMALL_SETTINGS)
    write_models(tmp_path / "models", file_inputs(prompt), cache_dir=tiny_cache)
    write_inputs(tmp_path / "input", media_inputs(prompt))
    runner = pack_runner(models_dir=tmp_path / "models", output_dir=tmp_path / "output", input_dir=tmp_path / "input")
    result = runner.run(prompt).expect_success()
    files = [item for ui in result.outputs.values() for key in OUTPUT_KEYS for item in ui.get(key, [])]
    assert files, f"{workflow.name}: no node reported an output file ({result.outputs})"
    for item in files:
        path = tmp_path / "output" / item.get("subfolder", "") / item["filename"]
        if path.suffix in (".mp4", ".webm", ".gif"):
            assert read_video(path).frame_count >= 1
        else:
            assert path.stat().st_size > 0
    assert any(progress[3] for progress in result.progress), "the sampler sent no latent preview"


@pytest.mark.parametrize("workflow", pack_only(ui_workflows()), ids=lambda p: p.stem)
def test_ui_workflow_maps_to_its_api_twin(workflow):
    pack = load_pack()
    twin = workflow.parent / "api" / workflow.name
    assert twin.is_file(), f"{workflow.name} has no API twin at workflows/api/{workflow.name}"
    converted = ui_to_api(load_json(workflow), pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert prompt_differences(load_json(twin), converted) == []


def test_every_api_workflow_has_a_ui_twin():
    ui_names = {p.name for p in ui_workflows()}
    assert [p.name for p in api_workflows() if p.name not in ui_names] == []


@pytest.mark.parametrize("workflow", pack_only(ui_workflows()), ids=lambda p: p.stem)
def test_ui_workflow_is_what_the_frontend_saves(workflow):
    """Links agree with both ends (ids, slots, types); every socket input of a node is listed (else
    the frontend drops it on load); ids and counters are consistent; model files carry download links."""
    pack = load_pack()
    data = load_json(workflow)
    nodes = {n["id"]: n for n in data["nodes"]}
    links = {link[0]: link for link in data["links"]}
    assert data["version"] == 0.4 and data["last_node_id"] == max(nodes) and data["last_link_id"] == max(links)
    for link_id, origin, origin_slot, target, target_slot, kind in links.values():
        source, sink = nodes[origin], nodes[target]
        assert link_id in source["outputs"][origin_slot]["links"] and sink["inputs"][target_slot]["link"] == link_id
        assert source["outputs"][origin_slot]["type"] == kind == sink["inputs"][target_slot]["type"]
    for node in data["nodes"]:
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            assert node["type"] == "MarkdownNote"
            continue
        widget_names = {w.name for w in widget_inputs(cls)}
        sections = cls.INPUT_TYPES()
        sockets = [name for section in ("required", "optional") for name in (sections.get(section) or {})
                   if name not in widget_names]
        assert [i["name"] for i in node["inputs"]] == sockets, node["type"]
        assert [o["type"] for o in node["outputs"]] == list(cls.RETURN_TYPES)
        linked = {i["link"] for i in node["inputs"] if i["link"] is not None}
        assert linked <= set(links) and all(set(o["links"]) <= set(links) for o in node["outputs"])
        for model in node["properties"].get("models", []):
            assert model["name"] in node["widgets_values"] and model["url"].startswith("https://huggingface.co/")
    orders = sorted(n["order"] for n in data["nodes"])
    assert orders == list(range(len(orders)))
    for link_id, origin, _, target, _, _ in links.values():
        assert nodes[origin]["order"] < nodes[target]["order"], f"link {link_id} goes backwards in execution order"
