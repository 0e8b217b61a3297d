"""The persistent local worker group (hyvideo_core/run/worker_group.py) on the CPU with gloo:
this process is rank 0, spawned workers are the other ranks.

One group (2 ranks, Ulysses 2) serves several jobs: equal to one process (with TeaCache and true
CFG, and a LoRA), an agreed stop at the same step on both ranks (the group stays usable), then a
worker killed in the middle of a run: a clear error naming the rank, and no process left.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from hyvideo_core.errors import CancelledError, InvalidInputError
from hyvideo_core.lora import LoraSpec, load_lora
from hyvideo_core.parallel import ParallelConfig
from hyvideo_core.run import CacheRequest, load_dit
from hyvideo_core.run.stages import LocalHost, sample_video
from hyvideo_core.run.worker_group import GroupLayout, WorkerGroup, WorkerGroupError
from hyvideo_core.sampling import PromptPair, PromptTensors, SamplingHooks, SamplingOptions
from tiny_models import write_dit, write_lora

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
SIZE = (32, 32, 9)                      # latent 3 x 2 x 2: 12 image tokens, 6 per rank
OPTIONS = SamplingOptions(steps=6, cfg_scale=3.0, seed=5)
CACHE = CacheRequest("teacache", 0.2)


def prompt(seed: int, length: int = 6, valid: int = 4) -> PromptTensors:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :valid] = 1
    return PromptTensors(torch.randn(1, length, 64, generator=g), mask, torch.randn(1, 32, generator=g))


EMBEDS = PromptPair(prompt(1), prompt(2, valid=6))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("group")
    return write_dit(root / "dit.safetensors", torch.float32), write_lora(root / "lora.safetensors")


@pytest.fixture(scope="module")
def dit(files):
    return load_dit(files[0], dtype=torch.float32, weight_format="auto", attention="sdpa", main=CPU, offload=CPU,
                    swapping=False)


@pytest.fixture(scope="module")
def group():
    group = WorkerGroup.start(GroupLayout(("cpu", "cpu"), ParallelConfig(ulysses_degree=2)))
    yield group
    group.close()


def one_process(dit, loras=()):
    return sample_video(dit, EMBEDS, OPTIONS, size=SIZE, loras=loras, cache=CACHE.build(), host=LocalHost(CPU))


def test_image_to_video_on_two_ranks_equals_one_process(dit, group):
    """token_replace (the 16-channel I2V): frame 0 stays the image latent on every rank's view."""
    from hyvideo_core.conditioning import ImageConditioning
    image = ImageConditioning(torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(9)),
                              "token_replace", True, SIZE[0], SIZE[1])
    options = SamplingOptions(steps=4, seed=7)
    alone = sample_video(dit, EMBEDS, options, size=SIZE, host=LocalHost(CPU), image=image)
    together = group.sample(dit, EMBEDS, options, size=SIZE, host=LocalHost(CPU), image=image)
    assert (together.result.latent - alone.result.latent).abs().max() < 1e-4
    assert torch.equal(together.result.latent[:, :, :1], image.latent)


def test_the_group_equals_one_process_and_is_reused(dit, files, group):
    alone = one_process(dit)
    pids = list(group.pids)
    steps = []
    together = group.sample(dit, EMBEDS, OPTIONS, size=SIZE, cache=CACHE,
                            hooks=SamplingHooks(progress=lambda done, total: steps.append(done)), host=LocalHost(CPU))
    assert steps == list(range(1, 7))            # progress from rank 0
    assert (together.result.latent - alone.result.latent).abs().max() < 1e-4
    assert together.result.cache.skipped == alone.result.cache.skipped and alone.result.cache.skipped
    # a second job with a LoRA: the worker loads the same file, the same process serves it
    lora = (LoraSpec(load_lora(files[1]), 0.7),)
    alone = one_process(dit, lora)
    together = group.sample(dit, EMBEDS, OPTIONS, size=SIZE, loras=lora, cache=CACHE, host=LocalHost(CPU))
    assert (together.result.latent - alone.result.latent).abs().max() < 1e-4
    assert group.pids == pids
    dit.sync_loras(())


def test_a_stop_on_rank_0_stops_every_rank_at_the_same_step(dit, group):
    def interrupt(done, total):
        if done == 2:
            raise CancelledError("interrupted by the user")   # as ComfyUI's progress hook raises its interrupt

    with pytest.raises(CancelledError, match="interrupted by the user"):
        group.sample(dit, EMBEDS, OPTIONS, size=SIZE, hooks=SamplingHooks(progress=interrupt), host=LocalHost(CPU))
    assert not group.closed                       # the worker stopped too, and answered "cancelled"
    again = group.sample(dit, EMBEDS, OPTIONS, size=SIZE, cache=CACHE, host=LocalHost(CPU))
    assert (again.result.latent - one_process(dit).result.latent).abs().max() < 1e-4


def test_a_bad_layout_is_refused_before_anything_starts(dit):
    with pytest.raises(InvalidInputError, match="world size is 3"):
        WorkerGroup.start(GroupLayout(("cpu", "cpu", "cpu"), ParallelConfig(ulysses_degree=2)))
    layout = GroupLayout(("cpu", "cpu", "cpu"), ParallelConfig(ulysses_degree=3))
    with pytest.raises(InvalidInputError, match="does not divide the model's 2 attention heads"):
        layout.check(heads=dit.transformer.config.heads)


def test_a_killed_worker_gives_a_clear_error_and_leaves_no_process(dit, group):
    group.close()                                 # one process group per process: the shared one goes first
    group = WorkerGroup.start(GroupLayout(("cpu", "cpu"), ParallelConfig(ring_degree=2)))
    pid = group.pids[0]
    killed = threading.Event()

    def kill_at_step_2(done, total):
        if done == 2 and not killed.is_set():
            os.kill(pid, signal.SIGKILL)
            killed.set()
            time.sleep(0.5)

    many = SamplingOptions(steps=40, seed=5)
    with pytest.raises(WorkerGroupError, match=r"rank 1 \(cpu, pid \d+\) died during sampling \(exit code -9"):
        group.sample(dit, EMBEDS, many, size=SIZE, hooks=SamplingHooks(progress=kill_at_step_2), host=LocalHost(CPU))
    assert group.closed and group.pids == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # the process group was left: a new group starts in this process
    fresh = WorkerGroup.start(GroupLayout(("cpu", "cpu"), ParallelConfig(ulysses_degree=2)))
    try:
        out = fresh.sample(dit, EMBEDS, OPTIONS, size=SIZE, cache=CACHE, host=LocalHost(CPU))
        assert (out.result.latent - one_process(dit).result.latent).abs().max() < 1e-4
    finally:
        fresh.close()
