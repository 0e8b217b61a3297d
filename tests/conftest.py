"""Shared test fixtures: golden vectors (copied from shared/golden) and tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDEN = Path(__file__).parent / "golden"

torch.manual_seed(0)


def golden_path(*parts: str) -> Path:
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
