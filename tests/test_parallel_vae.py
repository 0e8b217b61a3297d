"""Parallel VAE decode over 2 gloo ranks (spawned processes): bit-identical to the one-process
tiled decode, the tiles really split, and a failing or missing rank stops the other one."""
from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

import hyvideo_core
from hyvideo_core.vae import TileSpec

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "golden" / "vae"
WORLD = 2
# Space and time tiled: 3 temporal chunks x 3 x 3 spatial tiles with short edge tiles, per sample.
TILES = TileSpec(spatial=32, spatial_overlap=8, temporal=12, temporal_overlap=4)
SHAPE = (2, 16, 5, 7, 9)
DEADLINE_S = 90      # the whole spawned run; a hang fails the test instead of blocking it
GROUP_TIMEOUT_S = 3  # the short-timeout group of the "a rank never arrives" case


def _load_vae():
    config = json.loads((GOLDEN / "config.json").read_text())
    return hyvideo_core.load_vae(GOLDEN / "weights.safetensors", config=config, dtype=torch.float32)


def _latent() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist
    from hyvideo_core.parallel.vae_decode import decode_parallel

    torch.set_num_threads(1)
    folder = Path(folder)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    vae = _load_vae()
    report: dict = {}
    decoded = [0]
    plain = vae.decode_once

    def counting(latent, tiles, **kw):
        decoded[0] += 1
        return plain(latent, tiles, **kw)
    vae.decode_once = counting

    # 1. the tiled decode, spread; and an untiled one (one tile: rank 0 decodes it)
    steps = []
    video = decode_parallel(vae, _latent(), TILES, progress=lambda done, total: steps.append((done, total)))
    report["tiles_decoded_here"] = decoded[0]
    report["progress"] = steps[-1] if steps else None
    untiled = decode_parallel(vae, _latent()[:1], None)
    if rank == 0:
        torch.save({"tiled": video, "untiled": untiled}, folder / "videos.pt")
    else:
        report["returned"] = [video, untiled] == [None, None]

    # 2. a rank whose decode raises: both ranks stop in that round, the other with its message
    for case, error in (("raises", RuntimeError("boom on rank 1")), ("oom", torch.OutOfMemoryError("no memory"))):
        calls = [0]

        def failing(latent, tiles, error=error, **kw):
            calls[0] += 1
            if rank == 1 and calls[0] == 2:
                raise error
            return plain(latent, tiles, **kw)
        vae.decode_once = failing
        start = time.monotonic()
        try:
            decode_parallel(vae, _latent(), TILES)
            report[case] = ("returned", "", 0.0)
        except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
            report[case] = (type(exc).__name__, str(exc), time.monotonic() - start)
    vae.decode_once = plain

    # 3. a rank that never arrives: the other fails at the group's timeout instead of hanging
    short = dist.new_group(timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    flag = folder / "rank0_gave_up"
    if rank == 0:
        start = time.monotonic()
        try:
            decode_parallel(vae, _latent(), TILES, group=short)
            report["absent"] = ("returned", "", 0.0)
        except Exception as exc:  # noqa: BLE001
            report["absent"] = (type(exc).__name__, str(exc)[:200], time.monotonic() - start)
        flag.touch()
    else:
        end = time.monotonic() + 30
        while not flag.exists() and time.monotonic() < end:
            time.sleep(0.05)
    (folder / f"report{rank}.json").write_text(json.dumps(report))
    # gloo cannot tear down a group whose collective timed out (its pending work aborts the process
    # in the destructor), so the ranks leave without running destructors once the report is written.
    os._exit(0)


@pytest.mark.parametrize("tiles", [TILES, TileSpec(None, 0, 8, 4), TileSpec(32, 8, None, 0), TileSpec()])
def test_the_tile_list_is_what_the_tiled_decode_runs(tiles):
    """decode_tile_inputs lists the very chunks tiled_decode hands to `decode`, in its order."""
    from hyvideo_core.vae import VAEConfig
    from hyvideo_core.vae.tiling import decode_tile_count, decode_tile_inputs, decoded_tile_shape, tiled_decode
    config = VAEConfig()
    z = torch.randn(1, 16, 5, 7, 9)
    seen = []

    def decode(chunk):
        seen.append(chunk)
        return torch.zeros(decoded_tile_shape(chunk.shape, config))
    tiled_decode(z, decode, tiles, config)
    listed = decode_tile_inputs(z, tiles, config)
    assert len(listed) == len(seen) == decode_tile_count(z.shape, tiles, config)
    assert [(t.shape, t.storage_offset(), t.stride()) for t in listed] == \
        [(t.shape, t.storage_offset(), t.stride()) for t in seen]
    assert all(t.untyped_storage().data_ptr() == z.untyped_storage().data_ptr() for t in listed)


def test_two_ranks_decode_bit_identically_and_fail_together(vae, tmp_path):
    import torch.multiprocessing as mp

    latent = _latent()
    one_process = vae.decode(latent, tiling=TILES)
    untiled_reference = vae.decode(latent[:1])
    per_sample = hyvideo_core.vae.tiling.decode_tile_count(SHAPE, TILES, vae.config)
    assert per_sample == 27

    context = mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, "the spawned ranks hang"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in range(WORLD)]
    videos = torch.load(tmp_path / "videos.pt")

    assert torch.equal(videos["tiled"], one_process)
    assert torch.equal(videos["untiled"], untiled_reference)
    assert reports[1]["returned"]
    # round robin: 54 tiles, 27 on each rank (rank 0 also decodes the untiled latent)
    assert [r["tiles_decoded_here"] for r in reports] == [2 * per_sample // 2] * 2
    assert reports[0]["progress"] == [2 * per_sample, 2 * per_sample]

    kind, message, seconds = reports[0]["raises"]
    assert kind == "HyVideoError" and "rank 1: RuntimeError: boom on rank 1" in message, message
    assert seconds < 10
    assert reports[1]["raises"][:2] == ["RuntimeError", "boom on rank 1"]
    assert reports[0]["oom"][0] == "OutOfMemoryError" and reports[1]["oom"][0] == "OutOfMemoryError"

    kind, message, seconds = reports[0]["absent"]
    assert kind != "returned" and GROUP_TIMEOUT_S - 0.5 < seconds < GROUP_TIMEOUT_S + 10, (kind, message, seconds)
