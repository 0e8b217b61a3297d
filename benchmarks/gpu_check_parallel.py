"""Section 4: 2-rank Ulysses sequence parallelism equals one process.

With more than one GPU: 2 processes, NCCL, one GPU each, the medium preset with random weights
(identical on both ranks: every tensor has its own seed). Each rank times one forward of the
whole model alone (the one-process reference, on its own GPU), then under
`ParallelPolicy(ParallelConfig(ulysses_degree=2))`, and reports the largest difference.
On one GPU the section is skipped with a note; the dry run runs the same code on 2 gloo CPU
ranks with the tiny preset.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_check_common import Settings, Size, median, timed

GROUP_TIMEOUT = datetime.timedelta(seconds=60)


@dataclass
class RankResult:
    rank: int
    device: str
    one_process_s: float
    ulysses_s: float
    max_abs_diff: float
    rel_max_diff: float          # max |y_parallel - y_one| / max |y_one|
    all_to_all_bytes: int


@dataclass
class ParallelFigures:
    backend: str
    world: int
    config: str
    size: str
    ranks: list[RankResult]
    speedup: float               # one-process time / 2-rank time (rank 0)


def _worker(rank: int, world: int, port: int, folder: str, backend: str, config: str, size: tuple,
            text_tokens: int, repeats: int) -> None:
    import torch.distributed as dist
    from gpu_check_dit import forward_inputs, load_random, model_shapes, plain_format
    from hyvideo_core.parallel import ParallelConfig, ParallelPolicy
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        torch.set_num_threads(1)
        device = torch.device("cpu")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=GROUP_TIMEOUT)
    try:
        model = load_random(model_shapes(config).shapes, device)
        _, dtype = plain_format(device)
        inputs = forward_inputs(model.config, Size(*size), text_tokens, device, dtype)
        with torch.inference_mode():
            one = model(*inputs.args()).float()
            one_s = median(timed(lambda: model(*inputs.args()), device, 1, repeats))
            policy = ParallelPolicy(ParallelConfig(ulysses_degree=world), timeout=GROUP_TIMEOUT).install(model)
            split = model(*inputs.args()).float()
            dist.barrier()
            split_s = median(timed(lambda: model(*inputs.args()), device, 1, repeats))
            policy.remove()
        diff = float((split - one).abs().max())
        out = RankResult(rank, str(device), one_s, split_s, diff, diff / float(one.abs().max()),
                         int(policy.traffic.sent.get("all_to_all", 0)))
        Path(folder, f"rank{rank}.json").write_text(json.dumps(out.__dict__))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(backend: str, config: str, size: Size, text_tokens: int, repeats: int, deadline_s: float,
              world: int = 2) -> ParallelFigures:
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as folder:
        # spawn: fresh interpreters (a CUDA context cannot be forked); they get this process's sys.path
        context = mp.start_processes(_worker, args=(world, _free_port(), folder, backend, config,
                                                    (size.width, size.height, size.frames), text_tokens, repeats),
                                     nprocs=world, join=False, start_method="spawn")
        deadline = time.monotonic() + deadline_s
        while not context.join(timeout=1):   # raises as soon as one rank fails
            if time.monotonic() > deadline:
                for p in context.processes:
                    if p.is_alive():
                        p.kill()
                raise TimeoutError(f"parallel: {world} ranks did not finish in {deadline_s:.0f} s")
        ranks = [RankResult(**json.loads(Path(folder, f"rank{r}.json").read_text())) for r in range(world)]
    return ParallelFigures(backend, world, config, size.label, ranks, ranks[0].one_process_s / ranks[0].ulysses_s)


def run_parallel_section(settings: Settings, device: torch.device, guard, result) -> None:
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if gpus < 2:
            result.status = "skipped"
            result.notes.append(f"{gpus} GPU visible: the 2-rank NCCL Ulysses run needs 2 (run again on a "
                                "machine with two GPUs, or see tests/test_parallel.py for the gloo equivalent)")
            return
        backend = "nccl"
    else:
        backend = "gloo"
        result.notes.append("dry run: 2 gloo CPU ranks, tiny preset")
    result.data["parallel"] = run_ranks(backend, settings.parallel_config, settings.parallel_size,
                                        settings.text_tokens, settings.repeats, deadline_s=max(20.0, guard.left() - 5.0))
