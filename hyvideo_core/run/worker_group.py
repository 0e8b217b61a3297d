"""A persistent local worker group: one video sampled by several devices of one machine, with
this process (e.g. ComfyUI's) as rank 0 and one spawned worker process per extra device.

    group = WorkerGroup.start(GroupLayout(("cuda:0", "cuda:1"), ParallelConfig(ulysses_degree=2)))
    outcome = group.sample(dit, embeds, options, size=(960, 544, 129), loras=..., hooks=...)
    group.close()

- Rendezvous on 127.0.0.1 only, through a TCPStore this process owns (free port); NCCL when the
  devices are GPUs, gloo on the CPU. The workers are started with torch.multiprocessing (spawn:
  CUDA cannot be used in a forked child) and load the DiT from the same recipe, the same LoRA
  files and strengths; the parallel policy's identity check proves it before the first step.
- Progress and previews come from rank 0; a stop asked for on rank 0 (ComfyUI's interrupt)
  reaches every rank before the next step (parallel/agreement.py) and leaves the group usable.
- Any other failure ends the group: a worker that raises or dies is reported by rank and device,
  with its own message, and every worker is terminated (and joined) before the error reaches the
  caller. Workers also end themselves if this process disappears (worker.py), so none is orphaned.
- The group is reused across jobs; `close()` (the node's settings changed, the model was unloaded,
  the process exits) stops the workers and leaves the process group.
"""
from __future__ import annotations

import atexit
import multiprocessing.connection as mp_connection
import os
import socket
import sys
import time
import types
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import torch

from ..conditioning import ImageConditioning
from ..errors import HyVideoError, InvalidInputError
from ..lora import LoraSpec
from ..sampling import SamplingHooks, SamplingOptions
from .dit import LoadedDiT
from .settings import CacheRequest, SwapRequest
from .stages import RunHost, SampleOutcome
from .worker import LoraRecipe, SamplingJob, WorkerStart, joined_key, run_rank, worker_main

START_TIMEOUT_S = 120.0        # spawning a worker imports torch and this package (seconds on a CPU)
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
REPLY_GRACE_S = 5.0            # after rank 0 failed: how long a worker's own report may take to arrive
_OPEN: "weakref.WeakSet[WorkerGroup]" = weakref.WeakSet()


class WorkerGroupError(HyVideoError):
    """A worker of the group failed or died; the group was stopped."""


@dataclass(frozen=True)
class GroupLayout:
    devices: tuple[str, ...]        # rank r runs on devices[r]; devices[0] is this process's
    config: object                  # hyvideo_core.parallel.ParallelConfig

    def check(self, heads: int | None = None, main: torch.device | None = None) -> None:
        self.config.check(world_size=len(self.devices), heads=heads)
        kinds = {torch.device(d).type for d in self.devices}
        if len(kinds) > 1:
            raise InvalidInputError(f"devices {list(self.devices)}: use GPUs only or the CPU only, not both.")
        if kinds == {"cuda"} and len(set(self.devices)) != len(self.devices):
            raise InvalidInputError(f"devices {list(self.devices)}: each GPU may appear once (one rank per GPU).")
        if main is not None and torch.device(self.devices[0]) != torch.device(main):
            raise InvalidInputError(
                f"devices: the first device ({self.devices[0]}) runs in this process, so it must be the device the "
                f"model was loaded for ({main}); list {main} first.")

    def describe(self) -> str:
        return f"{len(self.devices)} ranks on {', '.join(self.devices)}: {self.config.describe()}"


class WorkerGroup:
    def __init__(self, layout: GroupLayout, workers: list, policy, store):
        self.layout = layout
        self._workers = workers          # [(process, connection)] for ranks 1..N-1
        self._policy = policy
        self._store = store
        self.closed = False
        _OPEN.add(self)

    # -- starting --------------------------------------------------------------------------
    @classmethod
    def start(cls, layout: GroupLayout, *, timeout: timedelta = COLLECTIVE_TIMEOUT) -> "WorkerGroup":
        import torch.distributed as dist
        import torch.multiprocessing as mp

        from ..parallel import ParallelPolicy

        layout.check()
        if dist.is_initialized():
            raise InvalidInputError(
                "parallel: this process already belongs to a torch.distributed process group (another worker "
                "group, or torchrun); close it before starting a new group.")
        world = len(layout.devices)
        port = _free_port()
        store = dist.TCPStore("127.0.0.1", port, world, is_master=True, wait_for_workers=False, timeout=timeout)
        context = mp.get_context("spawn")
        workers = []
        try:
            with _plain_main_module():
                for rank in range(1, world):
                    here, there = context.Pipe()
                    start = WorkerStart(rank, world, port, layout.devices[rank], layout.config, os.getpid(),
                                        timeout.total_seconds(), torch.get_num_threads())
                    process = context.Process(target=worker_main, args=(start, there), daemon=True,
                                              name=f"hyvideo-rank-{rank}")
                    process.start()
                    there.close()
                    workers.append((process, here))
            group = cls(layout, workers, None, store)
            group._join(store, timeout)
            group._policy = ParallelPolicy(layout.config, timeout=timeout)
            group._wait_ready()
            return group
        except BaseException:
            _stop_processes(workers)
            _leave()
            raise

    def _join(self, store, timeout: timedelta) -> None:
        """Join the process group once every worker reached the store (a worker that dies first is
        reported instead of waiting for the timeout)."""
        import torch.distributed as dist

        device = torch.device(self.layout.devices[0])
        if device.type == "cuda":
            torch.cuda.set_device(device)
        joined = [joined_key(rank) for rank in range(1, len(self.layout.devices))]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not store.check(joined):
            self._raise_if_a_worker_failed("while starting")
            if time.monotonic() > deadline:
                raise WorkerGroupError(f"parallel: the workers did not reach the rendezvous on 127.0.0.1 within "
                                       f"{START_TIMEOUT_S:.0f} s ({self.layout.describe()}).")
            time.sleep(0.05)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=0,
                                world_size=len(self.layout.devices), timeout=timeout)

    def _wait_ready(self) -> None:
        for rank, (process, conn) in enumerate(self._workers, start=1):
            reply = self._reply(rank, process, conn, time.monotonic() + START_TIMEOUT_S, "while starting")
            if reply[0] != "ready":
                raise WorkerGroupError(f"parallel worker rank {rank}: unexpected start-up reply {reply!r}.")

    # -- running ---------------------------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._workers]

    def sample(self, dit: LoadedDiT, embeds, options: SamplingOptions, *, size=None, init_latent=None,
               keyframe_latent=None, loras: tuple[LoraSpec, ...] = (), cache: CacheRequest | None = None,
               hooks: SamplingHooks | None = None, swap: SwapRequest = SwapRequest(),
               budget_gb: float | None = None, host: RunHost | None = None,
               image: ImageConditioning | None = None) -> SampleOutcome:
        """`stages.sample_video` on every rank; rank 0's outcome (the latent) is returned."""
        from ..parallel.agreement import AgreedStop

        if self.closed:
            raise InvalidInputError("parallel: this worker group was closed; start a new one.")
        if dit.recipe is None:
            raise InvalidInputError("parallel: the DiT was not loaded from a file (no recipe the workers can load).")
        self.layout.check(heads=dit.transformer.config.heads, main=dit.main)
        if cache is not None and not isinstance(cache, CacheRequest):
            raise InvalidInputError(f"cache: a parallel run takes a CacheRequest (every rank builds its own "
                                    f"policy), got {type(cache).__name__}.")
        job = SamplingJob(dit.recipe, tuple(LoraRecipe.of(s) for s in loras), _on_cpu(embeds), options, size,
                          _cpu(init_latent), _cpu(keyframe_latent), cache, swap, budget_gb,
                          None if image is None else replace(image, latent=image.latent.cpu()))
        self._send(job)
        stop = AgreedStop(hooks, dit.main)
        try:
            outcome = run_rank(dit, job, tuple(loras), self._policy, stop.hooks(), host)
        except BaseException as error:
            if stop.stopped:                          # every rank stopped at the same step
                self._collect({"cancelled"}, "after the stop")
                raise
            failure = self._first_failure()
            self.close()
            if failure is not None:
                raise failure from error
            raise
        self._collect({"done"}, "at the end of sampling")
        stop.raise_pending()
        outcome.notes.append(f"sampled on {self.layout.describe()}")
        return outcome

    def _send(self, job) -> None:
        for rank, (process, conn) in enumerate(self._workers, start=1):
            try:
                conn.send(job)
            except (OSError, EOFError):
                self.close()
                raise self._death(rank, process, "before the job started") from None

    def _collect(self, expected: set[str], when: str) -> None:
        try:
            for rank, (process, conn) in enumerate(self._workers, start=1):
                reply = self._reply(rank, process, conn, None, when)
                if reply[0] not in expected:
                    raise WorkerGroupError(f"parallel worker rank {rank}: expected {sorted(expected)}, got {reply!r}.")
        except BaseException:
            self.close()
            raise

    def _reply(self, rank: int, process, conn, deadline: float | None, when: str):
        """The worker's next message; its error or death as a WorkerGroupError."""
        while True:
            ready = mp_connection.wait([conn, process.sentinel], timeout=0.5)
            if conn in ready:
                try:
                    reply = conn.recv()
                except (EOFError, OSError):
                    raise self._death(rank, process, when) from None
                if reply[0] == "error":
                    raise self._worker_error(rank, reply)
                return reply
            if process.sentinel in ready:
                raise self._death(rank, process, when)
            if deadline is not None and time.monotonic() > deadline:
                raise WorkerGroupError(f"parallel worker rank {rank} ({self.layout.devices[rank]}) did not answer "
                                       f"{when} within {START_TIMEOUT_S:.0f} s.")

    def _first_failure(self) -> WorkerGroupError | None:
        """After rank 0 failed: the worker that failed first (its report, or its death), if any."""
        deadline = time.monotonic() + REPLY_GRACE_S
        while time.monotonic() < deadline:
            for rank, (process, conn) in enumerate(self._workers, start=1):
                if conn.poll():
                    try:
                        reply = conn.recv()
                    except (EOFError, OSError):
                        return self._death(rank, process, "during sampling")
                    if reply[0] == "error":
                        return self._worker_error(rank, reply)
                elif not process.is_alive():
                    return self._death(rank, process, "during sampling")
            time.sleep(0.05)
        return None

    def _raise_if_a_worker_failed(self, when: str) -> None:
        for rank, (process, conn) in enumerate(self._workers, start=1):
            if conn.poll():
                reply = conn.recv()
                if reply[0] == "error":
                    raise self._worker_error(rank, reply)
            if not process.is_alive():
                raise self._death(rank, process, when)

    def _worker_error(self, rank: int, reply) -> WorkerGroupError:
        _, kind, message = reply
        return WorkerGroupError(f"parallel worker rank {rank} ({self.layout.devices[rank]}) failed: {kind}: "
                                f"{message} The worker group was stopped; the next run starts a new one.")

    def _death(self, rank: int, process, when: str) -> WorkerGroupError:
        process.join(timeout=1.0)
        return WorkerGroupError(
            f"parallel worker rank {rank} ({self.layout.devices[rank]}, pid {process.pid}) died {when} (exit code "
            f"{process.exitcode}; a negative code is the signal that ended it, e.g. -9 = killed, often by the "
            "system running out of RAM). The worker group was stopped; the next run starts a new one.")

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every worker (asked first, then terminated) and leave the process group."""
        if self.closed:
            return
        self.closed = True
        for _, conn in self._workers:
            try:
                conn.send(None)
            except (OSError, EOFError):
                pass
        _stop_processes(self._workers, grace_s=2.0)
        self._workers = []
        self._policy = None
        _leave()
        self._store = None

    def unload(self) -> None:
        """The host's 'unload models': the workers hold the other devices' copies of the model."""
        self.close()


def _stop_processes(workers, grace_s: float = 0.0) -> None:
    deadline = time.monotonic() + grace_s
    for process, _ in workers:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process, conn in workers:
        if process.is_alive():
            process.terminate()
            process.join(timeout=5.0)
        if process.is_alive():
            process.kill()
            process.join()
        conn.close()


def _leave() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _plain_main_module():
    """Spawned children re-import the parent's __main__ script (for pickled objects defined there).
    Under ComfyUI that is main.py, which parses arguments and runs every pack's start-up code; our
    workers need nothing from it, so while they start, __main__ is an empty module."""
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _cpu(t):
    return None if t is None else t.detach().cpu()


def _on_cpu(embeds):
    to = getattr(embeds, "to", None)
    return to("cpu") if callable(to) else embeds


@atexit.register
def _close_all() -> None:
    for group in list(_OPEN):
        group.close()


def parse_devices(text: str) -> tuple[str, ...]:
    """'0,1' (GPU indices), 'cuda:0, cuda:1' or 'cpu, cpu' -> ('cuda:0', 'cuda:1') / ('cpu', 'cpu')."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    devices = []
    for item in items:
        name = f"cuda:{item}" if item.isdigit() else item
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise InvalidInputError(f"devices: {item!r} is not a device; write GPU indices like '0,1' or names like "
                                    "'cuda:0, cuda:1' ('cpu, cpu' runs CPU processes, for testing).") from None
        if device.type not in ("cuda", "cpu"):
            raise InvalidInputError(f"devices: {item!r}: only CUDA GPUs (or the CPU, for testing) can be used.")
        if device.type == "cuda":
            device = torch.device("cuda", device.index or 0)
            if not torch.cuda.is_available() or device.index >= torch.cuda.device_count():
                raise InvalidInputError(
                    f"devices: {name} is not available (this machine has {torch.cuda.device_count()} CUDA GPUs).")
        devices.append(str(device))
    if len(devices) < 2:
        raise InvalidInputError(f"devices: {text!r} names {len(devices)} device(s); a parallel run needs at least 2.")
    return tuple(devices)


class PersistentGroup:
    """A worker group for one layout, started when asked for, kept across runs, and started again on
    the next run after it was closed (the model was unloaded, a worker failed). This process can
    belong to one process group at a time, so starting one closes any other that is open."""

    def __init__(self, layout: GroupLayout):
        layout.check()
        self.layout = layout
        self.group: WorkerGroup | None = None

    def ensure_started(self) -> WorkerGroup:
        if self.group is None or self.group.closed:
            for other in list(_OPEN):
                if not other.closed:
                    other.close()
            self.group = WorkerGroup.start(self.layout)
        return self.group

    def sample(self, dit: LoadedDiT, embeds, options: SamplingOptions, **kwargs) -> SampleOutcome:
        return self.ensure_started().sample(dit, embeds, options, **kwargs)

    @property
    def running(self) -> bool:
        return self.group is not None and not self.group.closed

    def close(self) -> None:
        if self.group is not None:
            self.group.close()

    unload = close      # the host's 'unload models' frees the other devices' model copies
