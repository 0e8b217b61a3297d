"""The host harness: validation like ComfyUI, execution order, caching, interrupts, node errors,
and the UI-workflow converter, on example nodes that drive the real tiny DiT and video writer."""
from __future__ import annotations

import os

import pytest

import harness_example_nodes as ex
from harness import WorkflowError, pack_runner, prompt_differences, ui_to_api
from hyvideo_core.video import read_video
from tiny_models import write_dit


@pytest.fixture
def runner(tmp_path):
    write_dit(tmp_path / "models" / "unet" / "tiny_dit.safetensors")
    ex.LOADS.clear()
    return pack_runner(models_dir=tmp_path / "models", output_dir=tmp_path / "output", extra_nodes=ex.NODES)


def graph(**changes):
    return ex.example_prompt(**changes)


def test_prompt_runs_in_dependency_order_and_writes_a_video(runner, tmp_path):
    result = runner.run(graph()).expect_success()
    assert result.executed.index("1") < result.executed.index("2") < result.executed.index("3") < result.executed.index("4")
    assert "9" not in result.executed  # not an ancestor of an OUTPUT_NODE
    video = result.outputs["4"]["videos"][0]
    clip = read_video(tmp_path / "output" / video["filename"])
    assert clip.frame_count == 5 and clip.size == (32, 32)
    assert result.outputs["5"] == {"text": ["0.5"]}
    assert [p[:3] for p in result.progress] == [("3", 1, 2), ("3", 2, 2)] and all(p[3] for p in result.progress)


def test_changing_a_strength_reruns_downstream_only_and_never_reloads(runner):
    first = runner.run(graph(strength=1.0)).expect_success()
    instance = runner._objects[("3", "ExampleRender")]
    second = runner.run(graph(strength=0.5)).expect_success()
    assert ex.LOADS == ["tiny_dit.safetensors"]
    assert second.cached == ["1", "5"] and second.executed == ["2", "3", "4"]
    assert runner._objects[("3", "ExampleRender")] is instance and instance.calls == 2
    assert not (first.results["3"][0] == second.results["3"][0]).all()
    third = runner.run(graph(strength=0.5)).expect_success()
    assert third.executed == [] and sorted(third.cached) == ["1", "2", "3", "4", "5"]


def test_is_changed_nan_always_reruns(runner):
    prompt = {"5": {"class_type": "ExampleDivide", "inputs": {"a": -1.0, "b": 2.0}}}
    assert runner.run(prompt).executed == ["5"]
    assert runner.run(prompt).executed == ["5"]
    prompt["5"]["inputs"]["a"] = 1.0
    assert runner.run(prompt).executed == ["5"] and runner.run(prompt).executed == []


@pytest.mark.parametrize("change, node, kind", [
    (lambda p: p["3"]["inputs"].pop("seed"), "3", "required_input_missing"),
    (lambda p: p["3"]["inputs"].update(width=4096), "3", "value_bigger_than_max"),
    (lambda p: p["3"]["inputs"].update(steps=0), "3", "value_smaller_than_min"),
    (lambda p: p["3"]["inputs"].update(steps="many"), "3", "invalid_input_type"),
    (lambda p: p["1"]["inputs"].update(unet_name="hunyuan_video_t2v_720p_bf16.safetensors"), "1", "value_not_in_list"),
    (lambda p: p["4"]["inputs"].update(images=["1", 0]), "4", "return_type_mismatch"),
    (lambda p: p["5"]["inputs"].update(b=0.0), "5", "custom_validation_failed"),
])
def test_validation_errors_are_shaped_like_comfyui(runner, change, node, kind):
    prompt = graph()
    change(prompt)
    result = runner.run(prompt)
    assert result.node_errors[node]["errors"][0]["type"] == kind
    assert result.node_errors[node]["class_type"] == prompt[node]["class_type"]
    dependents = result.node_errors[node]["dependent_outputs"]
    assert dependents == (["5"] if node == "5" else ["4"])
    # the other sink is still valid, so the prompt runs it (ComfyUI returns 200 with node_errors)
    assert result.ok and (("4" in result.executed) == (node == "5"))


def test_prompt_level_errors(runner):
    assert runner.run({"1": {"class_type": "NoSuchNode", "inputs": {}}}).error["type"] == "invalid_prompt"
    assert runner.run({"1": graph()["1"]}).error["type"] == "prompt_no_outputs"
    broken = graph()
    broken["5"]["inputs"]["b"] = 0.0
    broken["3"]["inputs"]["width"] = 1
    result = runner.run(broken)
    assert result.status == "invalid" and result.error["type"] == "prompt_outputs_failed_validation"
    # like ComfyUI, the details list the sinks' own errors; upstream ones are in node_errors
    assert result.error["details"] == "Custom validation failed for node: b - b must be non-zero"
    assert result.node_errors["3"]["errors"][0]["message"] == "Value 1 smaller than min of 16"


def test_interrupt_during_a_node_stops_the_run_and_leaves_no_video(runner, tmp_path):
    def press_cancel(node_id, value, total, preview):
        if value == 2:
            runner.host.interrupt()
    runner.host.on_progress = press_cancel
    try:
        result = runner.run(graph(steps=5))
    finally:
        runner.host.on_progress = None
    assert result.status == "interrupted" and result.error["node_id"] == "3"
    assert result.error["executed"] == ["1", "2"]
    assert not (tmp_path / "output").exists() or os.listdir(tmp_path / "output") == []
    assert runner.run(graph(steps=5)).ok  # the flag does not leak into the next prompt


def test_a_failing_node_becomes_an_execution_error_naming_the_folders(runner, tmp_path, monkeypatch):
    # The file disappears after the combo list was made (ComfyUI caches file lists).
    (tmp_path / "models" / "unet" / "tiny_dit.safetensors").rename(tmp_path / "gone.safetensors")
    monkeypatch.setattr(ex.ExampleLoader, "INPUT_TYPES", classmethod(lambda cls: {"required": {"unet_name": (
        ["tiny_dit.safetensors"], {"tooltip": "stale list"})}}))
    result = runner.run(graph())
    assert result.status == "error" and result.error["node_id"] == "1"
    assert result.error["exception_type"] == "InvalidInputError"
    message = result.error["exception_message"]
    assert "tiny_dit.safetensors" in message and os.path.join("models", "unet") in message


def ui_node(node_id, kind, widgets, inputs=(), outputs=(), mode=0):
    return {"id": node_id, "type": kind, "mode": mode, "widgets_values": widgets,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": t, "type": t, "links": []} for t in outputs]}


def ui_graph(render_widgets=(32, 5, 2, 3, "randomize")):
    return {"nodes": [
        ui_node(1, "ExampleLoader", ["tiny_dit.safetensors"], outputs=["EXAMPLE_MODEL"]),
        ui_node(2, "ExampleStrength", [1.0], [("model", "EXAMPLE_MODEL", 1)], ["EXAMPLE_MODEL"]),
        ui_node(7, "ExampleStrength", [0.25], [("model", "EXAMPLE_MODEL", 2)], ["EXAMPLE_MODEL"], mode=4),
        ui_node(8, "Reroute", [], [("", "*", 3)], ["EXAMPLE_MODEL"]),
        ui_node(3, "ExampleRender", list(render_widgets), [("model", "EXAMPLE_MODEL", 4)], ["IMAGE"]),
        ui_node(4, "ExampleSaveVideo", ["clip", "mp4"], [("images", "IMAGE", 5)]),
        ui_node(5, "ExampleDivide", [1.0, 2.0]),
        ui_node(6, "ExampleDivide", [1.0, 3.0], mode=2),
        {"id": 10, "type": "Note", "mode": 0, "widgets_values": ["a note"]},
    ], "links": [[1, 1, 0, 2, 0, "EXAMPLE_MODEL"], [2, 2, 0, 7, 0, "EXAMPLE_MODEL"], [3, 7, 0, 8, 0, "EXAMPLE_MODEL"],
                 [4, 8, 0, 3, 0, "EXAMPLE_MODEL"], [5, 3, 0, 4, 0, "IMAGE"]]}


def test_ui_workflow_converts_to_its_api_twin(runner):
    expected = graph()
    del expected["9"]
    converted = ui_to_api(ui_graph(), runner.mappings)
    assert prompt_differences(expected, converted) == []
    assert converted["3"]["_meta"]["title"] == "ExampleRender"
    assert runner.run(converted).ok


def test_ui_workflow_with_shifted_or_missing_widget_values_is_refused(runner):
    with pytest.raises(WorkflowError, match="has 4 values but INPUT_TYPES expects 5"):
        ui_to_api(ui_graph((32, 5, 2, 3)), runner.mappings)
    with pytest.raises(WorkflowError, match="control_after_generate value is 3"):
        ui_to_api(ui_graph((32, 5, 2, "randomize", 3)), runner.mappings)
    workflow = ui_graph()
    workflow["nodes"].append(ui_node(11, "SomeOtherPackNode", []))
    with pytest.raises(WorkflowError, match="SomeOtherPackNode"):
        ui_to_api(workflow, runner.mappings)


def test_prompt_differences_names_what_differs(runner):
    converted = ui_to_api(ui_graph(), runner.mappings)
    twin = graph()
    twin["3"]["inputs"]["seed"] = 4
    assert prompt_differences(twin, converted) == ["node 3.seed: API twin 4 vs converted 3",
                                                   "node 9 missing from the converted prompt"]


def test_example_nodes_pass_the_contract():
    from harness import contract
    assert contract.mapping_problems(ex.NODES, require_display_names=False) == {}


def test_upload_button_value_saved_by_the_frontend_is_accepted():
    """The real frontend saves an upload button's value after the widgets (e.g. [..., "image"])."""
    import json
    from pathlib import Path
    from harness import load_pack, ui_to_api
    pack = load_pack()
    workflow = json.loads((Path(__file__).parents[1] / "workflows" / "hunyuan_video_v2v.json").read_text())
    expected = ui_to_api(workflow, pack.NODE_CLASS_MAPPINGS)
    for node in workflow["nodes"]:
        if node["type"] in ("HyVideoLoadVideo", "HyVideoLoadImage"):
            node["widgets_values"] = [*node["widgets_values"], "image"]
    assert ui_to_api(workflow, pack.NODE_CLASS_MAPPINGS) == expected
