"""The 13B preset, built on the meta device, is exactly the official checkpoint's layout."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from hyvideo_core.model.config import PRESETS
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.weights.diffusers_names import to_diffusers

MANIFEST = Path(__file__).parent / "data" / "dit_keys_official_13b.json"
DIFFUSERS_MANIFEST = Path(__file__).parent / "data" / "dit_keys_diffusers_13b.json"


def _meta_13b():
    with torch.device("meta"):
        return HunyuanVideoTransformer(PRESETS["hunyuan-video-13b"], dtype=torch.bfloat16)


def test_13b_keys_and_shapes_equal_manifest():
    expected = json.loads(MANIFEST.read_text())
    state = _meta_13b().state_dict()
    assert len(state) == len(expected) == 856
    assert {k: list(v.shape) for k, v in state.items()} == expected


def test_13b_parameter_count():
    assert sum(p.numel() for p in _meta_13b().parameters()) == 12_821_012_544


def test_13b_diffusers_names_equal_diffusers_manifest():
    expected = json.loads(DIFFUSERS_MANIFEST.read_text())
    converted = to_diffusers(_meta_13b().state_dict(), 3072)
    assert {k: list(v.shape) for k, v in converted.items()} == expected
