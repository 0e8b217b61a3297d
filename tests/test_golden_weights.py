"""The regenerated golden DiT weights are the reference's file, bit for bit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_json
from golden_dit_weights import DIT_WEIGHTS_SHA256, dit_weights, state_digest

SHARED_ORIGINAL = Path(__file__).resolve().parents[2] / "shared" / "golden" / "dit" / "weights.safetensors"


def test_regenerated_weights_have_the_pinned_digest():
    assert state_digest(dit_weights(golden_json("dit", "config.json"))) == DIT_WEIGHTS_SHA256


@pytest.mark.skipif(not SHARED_ORIGINAL.exists(), reason="shared/golden is not beside the repository")
def test_regenerated_weights_equal_the_shared_original():
    original = load_file(str(SHARED_ORIGINAL))
    regenerated = dit_weights(golden_json("dit", "config.json"))
    assert set(regenerated) == set(original)
    for name, tensor in original.items():
        assert torch.equal(regenerated[name], tensor), name
