"""Several processes for one video, started by torchrun: the ranks, their devices, the groups.

    torchrun --nproc_per_node 8 -m hyvideo_core generate ... --ulysses-degree 8
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        -m hyvideo_core generate ... --ulysses-degree 8 --ring-degree 2

torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) says who is who; we launch
nothing ourselves. Each rank loads the same files and runs the same run; the DiT's sequence / CFG
parallel policy (hyvideo_core/parallel/) and the parallel VAE decode do the sharing. Only rank 0
reports and writes the video. A rank that fails exits with its error; torchrun then stops the
others (its elastic agent terminates the remaining workers), and the process group's timeout
bounds any collective still waiting, so nothing hangs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..errors import InvalidInputError

COLLECTIVE_TIMEOUT = timedelta(minutes=10)   # a 720p step on one GPU takes ~40 s; this is far above


@dataclass(frozen=True)
class ParallelRequest:
    """How a run is spread over processes (all 1/False: one process)."""

    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_parallel: bool = False
    vae_parallel: bool = False

    def __post_init__(self):
        for name in ("ulysses_degree", "ring_degree"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} {value!r}: give a whole number >= 1.")

    @property
    def world_size(self) -> int:
        return self.ulysses_degree * self.ring_degree * (2 if self.cfg_parallel else 1)

    @property
    def active(self) -> bool:
        return self.world_size > 1 or self.vae_parallel

    def describe(self) -> str:
        if not self.active:
            return "one process"
        parts = [f"ulysses {self.ulysses_degree}", f"ring {self.ring_degree}"]
        parts += ["CFG parallel"] if self.cfg_parallel else []
        parts += ["parallel VAE decode"] if self.vae_parallel else []
        return f"{self.world_size if self.world_size > 1 else _env_world()} processes: " + ", ".join(parts)


@dataclass(frozen=True)
class Ranks:
    rank: int
    world_size: int
    device: torch.device

    @property
    def leader(self) -> bool:
        return self.rank == 0


def _env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_launch(request: ParallelRequest) -> None:
    """Before anything loads: this process was started by torchrun with a matching world size."""
    if not request.active:
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise InvalidInputError(
            f"{request.describe()}: start the command with torchrun, e.g. `torchrun --nproc_per_node "
            f"{request.world_size} -m hyvideo_core generate ...`; torchrun sets RANK and WORLD_SIZE.")
    world = _env_world()
    if request.world_size > 1 and world != request.world_size:
        from ..parallel import allowed_layouts
        raise InvalidInputError(
            f"--ulysses-degree {request.ulysses_degree} x --ring-degree {request.ring_degree}"
            f"{' x 2 (--cfg-parallel)' if request.cfg_parallel else ''} = {request.world_size} processes, but "
            f"torchrun started {world}. For {world} processes use one of: {', '.join(allowed_layouts(world))}.")


def start_ranks(request: ParallelRequest, device: str = "auto") -> Ranks:
    """Join torchrun's process group: NCCL with one GPU per local rank, else gloo on the CPU."""
    import torch.distributed as dist

    check_launch(request)
    rank, world = int(os.environ["RANK"]), _env_world()
    local = int(os.environ.get("LOCAL_RANK", rank))
    on_gpu = torch.cuda.is_available() and device != "cpu"
    if on_gpu:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return Ranks(rank, world, torch.device("cuda", local) if on_gpu else torch.device("cpu"))


def stop_ranks() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_leader(value):
    """Rank 0's value on every rank (e.g. VAE tiles chosen from rank 0's free memory)."""
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
