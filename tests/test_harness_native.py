"""Our DiT under ComfyUI's native samplers in the node harness: ComfyUI imported in one process
(no server), the harness's PromptRunner running native KSampler / SamplerCustomAdvanced on
HunyuanVideo To Native MODEL next to our sampler node (tests/harness_native_run.py, under
COMFYUI_PYTHON). The same comparisons through ComfyUI's server are in test_comfyui_native.py.

Same seed, steps, shift and guidance: the same latent within 1e-4 (fp32 tiny model) plain, with
fp8 storage and block swap, with a LoRA selected and with TeaCache attached; a control pair in
each case shows the comparison can fail. ComfyUI's interrupt flag stops a native run mid-way.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import comfyui_server
from harness_native_run import write_case_models

pytestmark = comfyui_server.unless_present(comfyui_server.host_missing())
TESTS = Path(__file__).resolve().parent
TOLERANCE = 1e-4
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    comfyui_server.require(comfyui_server.host_missing())
    root = tmp_path_factory.mktemp("harness_native")
    write_case_models(root / "models")
    path = root / "report.json"
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    done = subprocess.run([python, str(TESTS / "harness_native_run.py"), str(root), str(path)], cwd=TESTS,
                          env={**os.environ, "COMFYUI_PATH": comfyui_server.COMFYUI_PATH},
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, f"harness run failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads(path.read_text())


def case(report: dict, name: str) -> dict:
    entry = report[name]
    assert entry["status"] == "success", entry.get("error")
    return entry


def test_native_ksampler_equals_our_sampler(report):
    plain = case(report, "plain")
    assert plain["shape"] == [1, 16, 2, 8, 8] and plain["abs"] > 0.1
    assert plain["diffs"]["a-b"] < TOLERANCE, plain["diffs"]
    assert plain["diffs"]["a-c"] > 0.1                       # another seed: the comparison can fail
    assert {"a", "b"} <= set(plain["progress_nodes"])       # native KSampler's steps reached the runner


def test_sampler_custom_advanced_with_model_sampling_sd3_equals_our_sampler(report):
    assert case(report, "advanced")["diffs"]["a-x1"] < TOLERANCE


def test_fp8_and_block_swap_stay_in_force(report):
    entry = case(report, "fp8_swap")
    assert entry["diffs"]["a-b"] < TOLERANCE, entry["diffs"]
    assert entry["diffs"]["b-c"] > 1e-4                      # fp8 storage was really used natively
    assert entry["state"]["state"] == "swapped" and entry["state"]["swapped"] == [1, 1], entry["state"]


def test_lora_selection_stays_in_force(report):
    diffs = case(report, "lora")["diffs"]
    assert diffs["a-b"] < TOLERANCE, diffs
    assert diffs["b-c"] > 1e-3                               # the LoRA changes the native result
    assert diffs["c-d"] < TOLERANCE                          # and comes off for a model without it


def test_teacache_stays_in_force(report):
    entry = case(report, "teacache")
    assert any("teacache: skipped" in line and "skipped 0 " not in line for line in entry["texts"]["a"])
    assert entry["diffs"]["a-b"] < TOLERANCE, entry["diffs"]
    assert entry["diffs"]["b-c"] > 1e-3                      # steps were skipped under the native sampler


def test_comfyuis_interrupt_stops_a_native_run(report):
    entry = report["interrupted"]
    assert entry["status"] == "interrupted", entry
    assert entry["error"]["node_type"] == "KSampler"
    assert entry["error"]["exception_type"] == "InterruptProcessingException"
    assert max(entry["steps_seen"]) < 4                      # stopped before its last step
