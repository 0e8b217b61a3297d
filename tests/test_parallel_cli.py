"""`torchrun ... -m hyvideo_core generate --ulysses-degree ...` on the CPU (gloo): the parallel run writes
the same video as one process, only rank 0 reports and writes, and a failing rank ends the run."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hyvideo_core.cli import main
from hyvideo_core.video import read_video

DEMO = ["generate", "--demo", "--steps", "3", "--frames", "5", "--width", "64", "--height", "64", "--seed", "2"]
TIMEOUT = 240


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(args: list[str], processes: int = 2, script: str | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", _port()]
    target = [script] if script else ["-m", "hyvideo_core"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run(launcher + target + args, capture_output=True, text=True, timeout=TIMEOUT, env=env)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "one.webm"
    assert main([*DEMO, "--cfg-scale", "3", "-o", str(out)]) == 0
    return read_video(out).frames.astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [["--ulysses-degree", "2"], ["--cfg-parallel", "--vae-parallel"]])
def test_two_processes_write_the_one_process_video(tmp_path, one_process, layout):
    out = tmp_path / "two.webm"
    done = torchrun([*DEMO, "--cfg-scale", "3", *layout, "-o", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [str(out)]          # one path, from rank 0 only
    assert done.stderr.count("wrote ") == 1 and "2 processes" in done.stderr
    frames = read_video(out).frames.astype(np.float32)
    assert frames.shape == one_process.shape
    assert np.abs(frames - one_process).mean() < 1.0              # float32 reductions in another order


@pytest.mark.slow
def test_a_failing_rank_ends_the_run_with_its_message(tmp_path):
    out = tmp_path / "x.webm"
    done = torchrun([*DEMO, "--ulysses-degree", "2", "-o", str(out)], script=str(Path(__file__).parent /
                                                                                 "parallel_rank_fails.py"))
    assert done.returncode != 0
    assert "rank 1 failed on purpose" in done.stderr
    assert not out.exists()


def test_a_parallel_run_outside_torchrun_or_with_the_wrong_size_is_refused(tmp_path, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert main([*DEMO, "--ulysses-degree", "2", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "torchrun --nproc_per_node 2" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main([*DEMO, "--ulysses-degree", "2", "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "torchrun started 3" in err and "ulysses_degree=3" in err
