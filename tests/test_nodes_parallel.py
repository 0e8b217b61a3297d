"""The HunyuanVideo Parallel node in the node harness: a worker group of CPU processes (gloo) with
this process as rank 0, driven through API prompts like ComfyUI's.

One runner (so the node instances, and the group, persist across prompts as in ComfyUI): the
parallel graph equals the plain one, the group is reused, an interrupt stops both ranks and
keeps the group, a killed worker gives a clear node error and leaves no process, a settings
change or unloading the models replaces / stops the workers.
"""
from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import torch

from harness import load_pack
from node_graphs import LORA, PARALLEL, SAMPLER, sampled, t2v_prompt, tiny_runner, ui_text

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = dict(steps=4, seed=11, true_cfg_scale=3.0, cache={"threshold": 0.2}, loras=((LORA, 0.8),), frames=9)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    runner, folders = tiny_runner(tmp_path_factory.mktemp("parallel"))
    yield runner, folders
    runner.host.unload_all()            # stops the workers this module started


@pytest.fixture
def host():
    return load_pack().nodes.host.host


def graph(**changes) -> dict:
    """The test graph: true CFG (so a negative prompt), TeaCache and a LoRA; `changes` override RUN."""
    prompt = t2v_prompt(**{**RUN, **changes})
    prompt["3"]["inputs"]["negative_prompt"] = "blurry, low quality"
    return prompt


def workers() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("hyvideo-rank-")]


def test_the_parallel_graph_equals_the_plain_one_and_keeps_its_workers(setup):
    runner, _ = setup
    plain = runner.run(graph()).expect_success()
    first = runner.run(graph(parallel={})).expect_success()
    assert (sampled(first) - sampled(plain)).abs().max() < 1e-4
    assert "2 ranks on cpu, cpu" in ui_text(first, PARALLEL)
    skipped = [line for line in ui_text(plain, SAMPLER).splitlines() if line.startswith("teacache: skipped")]
    assert skipped and skipped[0] in ui_text(first, SAMPLER)          # the same steps skipped on both ranks
    assert "sampled on 2 ranks on cpu, cpu" in ui_text(first, SAMPLER)
    pids = [p.pid for p in workers()]
    assert len(pids) == 1
    again = runner.run(graph(parallel={}, seed=12)).expect_success()
    assert [p.pid for p in workers()] == pids             # the same worker served the next prompt
    assert not torch.equal(sampled(again), sampled(first))


def test_an_interrupt_stops_both_ranks_and_the_group_stays(setup, host):
    runner, _ = setup
    runner.run(graph(parallel={})).expect_success()
    pids = [p.pid for p in workers()]
    host.on_progress = lambda node_id, value, total, preview: host.interrupt()
    try:
        result = runner.run(graph(parallel={}, steps=40))
    finally:
        host.on_progress = None
    assert result.status == "interrupted" and result.error["node_id"] == SAMPLER
    assert len(result.progress) == 1                      # rank 0 stopped after the first step, the worker too
    assert [p.pid for p in workers()] == pids
    assert runner.run(graph(parallel={}, seed=5)).ok


def test_a_killed_worker_is_a_clear_node_error_with_no_process_left(setup, host):
    runner, _ = setup
    runner.run(graph(parallel={})).expect_success()
    (worker,) = workers()

    def kill(node_id, value, total, preview):
        if value == 2 and worker.is_alive():
            os.kill(worker.pid, signal.SIGKILL)
            worker.join(5)

    host.on_progress = kill
    try:
        result = runner.run(graph(parallel={}, steps=40))
    finally:
        host.on_progress = None
    assert result.status == "error" and result.error["node_id"] == SAMPLER
    assert result.error["exception_type"] == "WorkerGroupError"
    assert f"rank 1 (cpu, pid {worker.pid}) died during sampling (exit code -9" in result.error["exception_message"]
    assert workers() == []
    retry = runner.run(graph(parallel={}, seed=6)).expect_success()   # a new group starts
    assert [p.pid for p in workers()] != [worker.pid] and len(workers()) == 1
    assert retry.ok


def test_changed_settings_replace_the_workers_and_unloading_stops_them(setup, host):
    runner, _ = setup
    ulysses = runner.run(graph(parallel={})).expect_success()
    before = [p.pid for p in workers()]
    ring = runner.run(graph(parallel={"ulysses_degree": 1, "ring_degree": 2})).expect_success()
    after = [p.pid for p in workers()]
    assert len(after) == 1 and after != before
    assert (sampled(ring) - sampled(ulysses)).abs().max() < 1e-4
    host.unload_all()                                     # ComfyUI's "Unload models"
    assert workers() == []
    assert runner.run(graph(parallel={"ulysses_degree": 1, "ring_degree": 2}, seed=1)).ok


def test_a_layout_that_does_not_fit_is_a_node_error_naming_the_allowed_values(setup):
    runner, _ = setup
    result = runner.run(graph(parallel={"devices": "cpu,cpu,cpu", "ulysses_degree": 2}))
    assert result.status == "error" and result.error["node_id"] == PARALLEL
    assert "world size is 3" in result.error["exception_message"]
    assert "ulysses_degree=1 ring_degree=3" in result.error["exception_message"]
    result = runner.run(graph(parallel={"devices": "cpu"}))
    assert "a parallel run needs at least 2" in result.error["exception_message"]
