"""A small ComfyUI host for tests: runs API prompts like ComfyUI (validation, order, caching,
node errors) and converts UI workflows to API prompts like the frontend.

    from harness import PromptRunner, pack_runner
    runner = pack_runner(models_dir=tmp_path / "models", output_dir=tmp_path / "out")
    result = runner.run(prompt).expect_success()
    result.outputs["9"]          # the ui dict of node 9, as /history shows it
    result.executed, result.cached
"""
from __future__ import annotations

from .executor import HarnessLimitation, PromptRunner, RunResult, execution_order
from .pack import PACK_ROOT, load_pack, pack_module
from .prompts import (SMALL_SETTINGS, api_workflows, file_inputs, load_json, media_inputs, ui_workflows, with_files,
                      with_inputs)
from .ui_workflow import WorkflowError, prompt_differences, ui_to_api
from .validation import Validation, validate_prompt


def pack_runner(models_dir=None, output_dir=None, temp_dir=None, extra_nodes: dict | None = None,
                input_dir=None) -> PromptRunner:
    """A runner over the pack's NODE_CLASS_MAPPINGS (plus `extra_nodes`), with the pack's
    standalone host pointed at the given folders (models laid out like ComfyUI's models/)."""
    pack = load_pack()
    host = pack.nodes.host.host
    host.configure(models_dir=models_dir, output_dir=output_dir, temp_dir=temp_dir, input_dir=input_dir)
    return PromptRunner({**pack.NODE_CLASS_MAPPINGS, **(extra_nodes or {})}, host)


__all__ = ["SMALL_SETTINGS", "HarnessLimitation", "PACK_ROOT", "PromptRunner", "RunResult", "Validation", "WorkflowError",
           "api_workflows", "execution_order", "file_inputs", "load_json", "media_inputs", "load_pack", "pack_module", "pack_runner",
           "prompt_differences", "ui_to_api", "ui_workflows", "validate_prompt", "with_files", "with_inputs"]
