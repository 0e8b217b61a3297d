"""The HunyuanVideo Parallel node inside a real ComfyUI (issue 13): the shipped 2-GPU workflow on two
CPU ranks (gloo), with ComfyUI's process as rank 0 and one worker process it starts. Skipped
without COMFYUI_PATH, failed instead under CI (see tests/comfyui_server.py).

A worker is a child of the ComfyUI process started by multiprocessing's spawn (its command line
names `spawn_main`); the node also reports the worker pids in its UI text.
"""
from __future__ import annotations

import asyncio
import os
import signal

import psutil
import pytest

from comfyui_server import host_missing, http, log_tail, require, run_prompt, running_comfyui, unless_present
from harness import SMALL_SETTINGS, api_workflows, load_json, with_inputs

MISSING = host_missing()
pytestmark = unless_present(MISSING)
WORKFLOW = next(p for p in api_workflows() if p.stem == "hunyuan_video_t2v_2gpu")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    require(MISSING)
    with running_comfyui(tmp_path_factory.mktemp("comfyui")) as server:
        yield server


def prompt(**changes) -> dict:
    return with_inputs(load_json(WORKFLOW), {**SMALL_SETTINGS, **changes})


def node_id(graph: dict, class_type: str) -> str:
    return next(k for k, n in graph.items() if n["class_type"] == class_type)


def workers(server) -> list[psutil.Process]:
    """The live worker processes under ComfyUI (not multiprocessing's resource tracker)."""
    found = []
    for child in psutil.Process(server["process"].pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def run(server, graph: dict, **kwargs) -> tuple[dict, list]:
    return asyncio.run(run_prompt(server, graph, **kwargs))


def succeeded(server, graph: dict) -> dict:
    history, events = run(server, graph)
    assert history["status"]["status_str"] == "success", f"{events[-1:]}\n{log_tail(server)}"
    return history


def test_the_workflow_runs_on_two_ranks_and_keeps_its_worker(comfy):
    graph = prompt()
    first = succeeded(comfy, graph)
    text = " ".join(first["outputs"][node_id(graph, "HyVideoParallel")]["text"])
    (worker,) = workers(comfy)
    assert f"worker pids [{worker.pid}]" in text and "ulysses_degree=2" in text, text
    sampler_text = " ".join(first["outputs"][node_id(graph, "HyVideoSampler")]["text"])
    assert "sampled on" in sampler_text, sampler_text
    succeeded(comfy, prompt(seed=3))                      # the next prompt reuses the worker
    assert [p.pid for p in workers(comfy)] == [worker.pid]


def test_interrupt_stops_both_ranks(comfy):
    succeeded(comfy, prompt())
    (worker,) = workers(comfy)
    history, events = run(comfy, prompt(steps=500, seed=4), interrupt_after_progress=True)
    assert events[-1]["type"] == "execution_interrupted", [e["type"] for e in events]
    assert sum(e["type"] == "progress" for e in events) < 500
    # Rank 1 left the job too: it is alive, idle, and takes the next prompt at once.
    assert [p.pid for p in workers(comfy)] == [worker.pid]
    assert worker.cpu_percent(interval=1.0) < 50
    succeeded(comfy, prompt(seed=5))


def test_a_killed_worker_is_a_clear_error_and_leaves_no_process(comfy):
    succeeded(comfy, prompt())
    (worker,) = workers(comfy)
    history, events = run(comfy, prompt(steps=500, seed=7), on_first_progress=lambda: os.kill(worker.pid, signal.SIGKILL))
    assert events[-1]["type"] == "execution_error", [e["type"] for e in events]
    error = events[-1]["data"]
    assert error["node_type"] == "HyVideoSampler" and error["exception_type"].endswith("WorkerGroupError")
    assert f"pid {worker.pid}) died during sampling" in error["exception_message"], error["exception_message"]
    assert workers(comfy) == [] and not psutil.pid_exists(worker.pid)   # dead and reaped
    succeeded(comfy, prompt(seed=8))                       # a fresh group starts on the next prompt
    assert len(workers(comfy)) == 1 and workers(comfy)[0].pid != worker.pid


def test_unload_models_stops_the_workers(comfy):
    succeeded(comfy, prompt())
    assert len(workers(comfy)) == 1
    status, _ = asyncio.run(http(comfy, "POST", "/free", {"unload_models": True, "free_memory": True}))
    assert status == 200
    for _ in range(100):
        if not workers(comfy):
            break
        asyncio.run(asyncio.sleep(0.1))
    assert workers(comfy) == [], log_tail(comfy)
