"""Shared helpers of the sampling tests: the golden tiny DiT and random prompt embeds."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from hyvideo_core.model.config import PRESETS
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.sampling import PromptPair, PromptTensors

from conftest import golden_path

SIZE = {"width": 64, "height": 48, "frames": 9}   # latent [B, 16, 3, 6, 8]: 36 image tokens




def tiny_model(**config_changes) -> HunyuanVideoTransformer:
    """The golden tiny DiT (every block matters); other configs get seeded random weights."""
    if not config_changes:
        model = HunyuanVideoTransformer(PRESETS["tiny"])
        model.load_state_dict(load_file(str(golden_path("dit", "weights.safetensors"))))
        return model.eval()
    torch.manual_seed(7)
    return HunyuanVideoTransformer(PRESETS["tiny"].replace(**config_changes)).eval()


def prompt(config, length: int, seed: int, valid: int | None = None, batch: int = 1) -> PromptTensors:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length, dtype=torch.long)
    mask[:, : valid or length] = 1
    return PromptTensors(torch.randn(batch, length, config.text_dim, generator=g), mask,
                         torch.randn(batch, config.pooled_text_dim, generator=g))


def embeds(config, negative: bool = True) -> PromptPair:
    return PromptPair(prompt(config, 12, 1, valid=9), prompt(config, 7, 2) if negative else None)


class ForwardRecorder:
    """Records the positional inputs of every DiT forward call (counts forwards independently)."""

    def __init__(self, model):
        self.calls: list[tuple] = []
        self.handle = model.register_forward_pre_hook(lambda _m, args: self.calls.append(args))

    def __len__(self) -> int:
        return len(self.calls)


def test_golden_tiny_model_loads_every_weight():
    model = tiny_model()
    weights = load_file(str(golden_path("dit", "weights.safetensors")))
    assert set(model.state_dict()) == set(weights)
    assert torch.equal(model.double_blocks[0].img_mod.linear.weight, weights["double_blocks.0.img_mod.linear.weight"])
