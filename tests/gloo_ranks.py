"""Several CPU ranks (gloo) for the parallel tests: `run_suite("test_x:_suite", world, folder)` runs
the suite function `_suite(rank) -> dict` of a test module on `world` fresh processes joined in one
gloo group, and returns what every rank returned.

forkserver: fresh processes like spawn (never a fork of the pytest process, whose threads are not
fork-safe), forked from one server that imported torch and the engine once; with spawn, importing
torch in every rank took 8 s for 2 ranks and 15 s for 4 on 2 cores. (The server does not get the
tests folder on its path, so the worker's module is imported per rank.)
"""
from __future__ import annotations

import datetime
import importlib
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

GROUP_TIMEOUT = datetime.timedelta(seconds=30)    # a collective that waits longer fails the rank
SPAWN_DEADLINE_S = 150
PRELOAD = ["torch", "torch.distributed", "pytest", "hyvideo_core.model.transformer", "hyvideo_core.parallel",
           "hyvideo_core.sampling"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_suite(target: str, world: int, folder: Path) -> list[dict]:
    """What `module:function` returned on every rank; a rank that raises fails the test at once (and
    stops the others)."""
    mp.set_forkserver_preload(PRELOAD)
    context = mp.start_processes(_rank, args=(world, free_port(), str(folder), target), nprocs=world,
                                 join=False, start_method="forkserver")
    deadline = time.monotonic() + SPAWN_DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for p in context.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"parallel suite {target}: {world} ranks did not finish in {SPAWN_DEADLINE_S} s")
    return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _rank(rank: int, world: int, port: int, folder: str, target: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    module, function = target.split(":")
    suite = getattr(importlib.import_module(module), function)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=GROUP_TIMEOUT)
    try:
        torch.save(suite(rank), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
