"""Every shipped workflow, in the harness: each workflows/api/*.json runs end to end with tiny
models written under its public file names, and each UI workflow workflows/NAME.json converts
(node types, links, widget order incl. control_after_generate) to its twin workflows/api/NAME.json."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness import (SMALL_SETTINGS, api_workflows, file_inputs, load_json, load_pack, pack_runner,
                     prompt_differences, ui_to_api, ui_workflows, with_inputs)
from hyvideo_core.video import read_video
from tiny_models import write_models

OUTPUT_KEYS = ("videos", "images", "gifs")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.mark.parametrize("workflow", api_workflows(), ids=lambda p: p.stem)
def test_api_workflow_runs_end_to_end(workflow, tmp_path, tiny_cache):
    prompt = with_inputs(load_json(workflow), SMALL_SETTINGS)
    write_models(tmp_path / "models", file_inputs(prompt), cache_dir=tiny_cache)
    runner = pack_runner(models_dir=tmp_path / "models", output_dir=tmp_path / "output")
    result = runner.run(prompt).expect_success()
    files = [item for ui in result.outputs.values() for key in OUTPUT_KEYS for item in ui.get(key, [])]
    assert files, f"{workflow.name}: no node reported an output file ({result.outputs})"
    for item in files:
        path = tmp_path / "output" / item.get("subfolder", "") / item["filename"]
        if path.suffix in (".mp4", ".webm", ".gif"):
            assert read_video(path).frame_count >= 1
        else:
            assert path.stat().st_size > 0


@pytest.mark.parametrize("workflow", ui_workflows(), ids=lambda p: p.stem)
def test_ui_workflow_maps_to_its_api_twin(workflow):
    pack = load_pack()
    twin = workflow.parent / "api" / workflow.name
    assert twin.is_file(), f"{workflow.name} has no API twin at workflows/api/{workflow.name}"
    converted = ui_to_api(load_json(workflow), pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert prompt_differences(load_json(twin), converted) == []


def test_every_api_workflow_has_a_ui_twin():
    ui_names = {p.name for p in ui_workflows()}
    assert [p.name for p in api_workflows() if p.name not in ui_names] == []
