"""One rank of a local worker group (worker_group.py): the job every rank runs, and the worker
process's main loop.

Every rank - the host process as rank 0 and each worker - runs `run_rank` with the same
`SamplingJob`: the same DiT (loaded from the same recipe), the same LoRAs (from the same files),
the parallel policy installed for the duration of the job, and the one sampling loop through the
run layer's `sample_video`. A worker keeps its DiT and LoRA files between jobs and reloads only
what changed, as the loader node does in the host process.

A worker answers each job on its pipe with ("done",), ("cancelled",) or ("error", kind, message).
After an error it exits: the other ranks may be waiting in a collective, and its exit closes its
connections so they fail at once (gloo) instead of waiting for the collective timeout; rank 0
then tears the group down and reports this message.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..errors import CancelledError, InvalidInputError
from ..conditioning import ImageConditioning
from ..lora import BlockStrengths, LoraSpec, load_lora
from ..sampling import SamplingHooks, SamplingOptions
from .dit import DiTRecipe, LoadedDiT
from .settings import CacheRequest, SwapRequest
from .stages import LocalHost, SampleOutcome, sample_video


@dataclass(frozen=True)
class LoraRecipe:
    source: str
    name: str
    strength: float
    blocks: BlockStrengths | None = None

    @staticmethod
    def of(spec: LoraSpec) -> "LoraRecipe":
        source = spec.lora.source
        if not os.path.isfile(source):
            raise InvalidInputError(
                f"LoRA {spec.lora.name}: the parallel workers load LoRAs from their files, but this one did not come "
                f"from a file ({source!r}); load it from models/loras.")
        return LoraRecipe(source, spec.lora.name, spec.strength, spec.blocks)

    def stamp(self) -> tuple:
        stat = os.stat(self.source)
        return self.source, stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class SamplingJob:
    """Everything a rank needs to take part in one sampling run (tensors on the CPU)."""

    recipe: DiTRecipe
    loras: tuple[LoraRecipe, ...]
    embeds: object
    options: SamplingOptions
    size: tuple[int, int, int] | None
    init_latent: torch.Tensor | None
    keyframe_latent: torch.Tensor | None
    cache: CacheRequest | None
    swap: SwapRequest
    budget_gb: float | None
    image: ImageConditioning | None = None      # image to video: the first frame's latent (CPU)

    def identity(self) -> str:
        """How the model is loaded, compared across ranks before the first step."""
        return "|".join([self.recipe.identity(), *(f"{r.stamp()}:{r.strength}:{r.blocks}" for r in self.loras)])

    def settings(self) -> str:
        image = None if self.image is None else self.image.latent
        shapes = [None if t is None else tuple(t.shape) for t in (self.init_latent, self.keyframe_latent, image)]
        mode = None if self.image is None else (self.image.mode, self.image.stability)
        return repr((self.options, self.size, shapes, mode, self.cache, self.swap))


def run_rank(dit: LoadedDiT, job: SamplingJob, loras: tuple[LoraSpec, ...], policy, hooks: SamplingHooks,
             host) -> SampleOutcome:
    """This rank's part of the job, with the parallel policy on the DiT only while it runs."""
    dit.sync_loras(loras)                    # before the identity check: runtime adapters are fingerprinted
    policy.install(dit.transformer, identity=job.identity())
    try:
        policy.check_same("the sampling settings", job.settings())
        return sample_video(dit, job.embeds, job.options, size=job.size, init_latent=job.init_latent,
                            keyframe_latent=job.keyframe_latent, loras=loras,
                            cache=job.cache, hooks=hooks, swap=job.swap,
                            budget_gb=job.budget_gb, host=host, image=job.image)
    finally:
        policy.remove()


# -- the worker process ---------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerStart:
    rank: int
    world_size: int
    port: int
    device: str
    config: object          # hyvideo_core.parallel.ParallelConfig
    parent_pid: int
    timeout_s: float
    threads: int


def worker_main(start: WorkerStart, conn) -> None:
    """Entry point of a worker process (torch.multiprocessing, spawn)."""
    _exit_with_parent(start.parent_pid)
    try:
        policy, device = _join(start)
    except BaseException as error:   # noqa: BLE001 - reported to rank 0, then this process ends
        _report_and_exit(conn, error)
    conn.send(("ready", os.getpid()))
    state = _WorkerState(device)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break                                  # rank 0 closed the group
        if job is None:
            break
        try:
            dit = state.dit_for(job.recipe)
            loras = state.loras_for(job.loras)
            stop = _agreed_stop(SamplingHooks(), device)
            run_rank(dit, job, loras, policy, stop.hooks(), LocalHost(device))
            conn.send(("done",))
        except CancelledError:
            conn.send(("cancelled",))
        except BaseException as error:   # noqa: BLE001 - see the module docstring
            _report_and_exit(conn, error)
    _leave()


def _agreed_stop(hooks: SamplingHooks, device):
    from ..parallel.agreement import AgreedStop
    return AgreedStop(hooks, device)


def joined_key(rank: int) -> str:
    """The store key a worker sets once it reached rank 0's store (rank 0 then joins the group)."""
    return f"hyvideo/joined/{rank}"


def _join(start: WorkerStart):
    import torch.distributed as dist

    from ..parallel import ParallelPolicy

    torch.set_num_threads(start.threads)
    device = torch.device(start.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=start.timeout_s)
    store = dist.TCPStore("127.0.0.1", start.port, start.world_size, is_master=False, timeout=timeout)
    store.set(joined_key(start.rank), "1")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=start.rank,
                            world_size=start.world_size, timeout=timeout)
    return ParallelPolicy(start.config, timeout=timeout), device


class _WorkerState:
    """The worker's DiT and LoRA files, kept between jobs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.dit: tuple[tuple, LoadedDiT] | None = None
        self.lora_files: dict[tuple, object] = {}

    def dit_for(self, recipe: DiTRecipe) -> LoadedDiT:
        key = (recipe, recipe.identity())
        if self.dit is None or self.dit[0] != key:
            if self.dit is not None:
                self.dit[1].unload()
            self.dit = None
            self.dit = (key, recipe.load(self.device, torch.device("cpu")))
        return self.dit[1]

    def loras_for(self, recipes: tuple[LoraRecipe, ...]) -> tuple[LoraSpec, ...]:
        wanted = {r.stamp(): r for r in recipes}
        self.lora_files = {k: v for k, v in self.lora_files.items() if k in wanted}
        for stamp, recipe in wanted.items():
            if stamp not in self.lora_files:
                self.lora_files[stamp] = load_lora(recipe.source, name=recipe.name)
        return tuple(LoraSpec(self.lora_files[r.stamp()], r.strength, r.blocks) for r in recipes)


def _report_and_exit(conn, error: BaseException) -> None:
    try:
        conn.send(("error", type(error).__name__, str(error)))
        conn.close()
    finally:
        os._exit(1)   # not sys.exit: a thread blocked in a collective must not keep the process alive


def _leave() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def _exit_with_parent(parent_pid: int) -> None:
    """No orphans: a worker whose host process is gone (even killed with SIGKILL) ends itself."""
    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(2)
            time.sleep(0.5)
    threading.Thread(target=watch, name="hyvideo-parent-watch", daemon=True).start()
