"""Shared test fixtures: golden vectors (copied from shared/golden) and tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDEN = Path(__file__).parent / "golden"

torch.manual_seed(0)


def _install_standalone_host():
    """The pack's nodes run on the tests' standalone host, for the whole session; installed at
    import so that module-level code and INPUT_TYPES in collected test modules already see it."""
    from harness.pack import pack_module
    from harness.standalone_host import StandaloneHost
    pack_module("nodes.host").install_host(StandaloneHost())


_install_standalone_host()


def golden_path(*parts: str) -> Path:
    if parts == ("dit", "weights.safetensors"):  # regenerated, not tracked: see golden_dit_weights.py
        from golden_dit_weights import dit_weights_path
        return dit_weights_path(golden_json("dit", "config.json"))
    return GOLDEN.joinpath(*parts)


def golden_json(*parts: str):
    return json.loads(golden_path(*parts).read_text())


def golden_tensors(*parts: str) -> dict[str, torch.Tensor]:
    return load_file(str(golden_path(*parts)))


@pytest.fixture(scope="session")
def golden_dit_config() -> dict:
    return golden_json("dit", "config.json")


@pytest.fixture(scope="session")
def golden_dit_weights() -> dict[str, torch.Tensor]:
    return golden_tensors("dit", "weights.safetensors")


@pytest.fixture(scope="session")
def golden_dit(golden_dit_config):
    """The golden tiny DiT loaded through the public loader (fp32, CPU, sdpa)."""
    import hyvideo_core
    return hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config=golden_dit_config,
                                         dtype=torch.float32, attention="sdpa")


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny-model tests (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on 2 shared cores, OpenMP hand-offs cost more than such small maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vae():
    """The golden tiny VAE loaded through the public loader (fp32, CPU)."""
    import hyvideo_core
    return hyvideo_core.load_vae(golden_path("vae", "weights.safetensors"), config=golden_json("vae", "config.json"),
                                 dtype=torch.float32)
