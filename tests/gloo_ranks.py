"""Several CPU ranks (gloo) for the parallel tests: start `worker(rank, world, port, folder, *extra)`
in `world` fresh processes, wait for them, and load what each rank saved as `folder/rank{r}.pt`.

forkserver: fresh processes like spawn (never a fork of the pytest process, whose threads are not
fork-safe), forked from one server that imported torch and the engine once; with spawn, importing
torch in every rank took 8 s for 2 ranks and 15 s for 4 on 2 cores. (The server does not get the
tests folder on its path, so the worker's module is imported per rank.)
"""
from __future__ import annotations

import datetime
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

GROUP_TIMEOUT = datetime.timedelta(seconds=30)    # a collective that waits longer fails the rank
SPAWN_DEADLINE_S = 150
PRELOAD = ["torch", "torch.distributed", "pytest", "hyvideo_core.model.transformer", "hyvideo_core.parallel",
           "hyvideo_core.sampling"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, world: int, folder: Path, what: str, *extra) -> list[dict]:
    """What every rank saved; a rank that raises fails the test at once (and stops the others)."""
    mp.set_forkserver_preload(PRELOAD)
    context = mp.start_processes(worker, args=(world, free_port(), str(folder), *extra), nprocs=world,
                                 join=False, start_method="forkserver")
    deadline = time.monotonic() + SPAWN_DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for p in context.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"{what}: {world} ranks did not finish in {SPAWN_DEADLINE_S} s")
    return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(world)]
