"""The one placement mechanism: visits, residency, release and block swapping through Placement."""
from __future__ import annotations

import torch

from hyvideo_core.runtime.block_swap import BlockSwap
from hyvideo_core.runtime.placement import Placement, SwapCounts, module_bytes, same_device
from test_lora_support import tiny_dit


def test_a_visit_points_at_device_copies_and_gives_the_home_tensors_back():
    layer = torch.nn.Linear(4, 4)
    weight = layer.weight
    placement = Placement(layer, "meta", "cpu")
    with placement.visit():
        assert layer.weight.is_meta and layer.bias.is_meta
    assert layer.weight is weight  # the original tensor is back: nothing was copied back
    assert placement.state == "home"


def test_resident_stays_until_release_and_a_visit_keeps_it_resident():
    layer = torch.nn.Linear(4, 4)
    placement = Placement(layer, "meta", "cpu")
    placement.resident()
    with placement.visit():
        pass
    assert layer.weight.is_meta and placement.state == "resident"
    placement.release()
    assert not layer.weight.is_meta and placement.state == "home"


def test_same_device_moves_nothing():
    layer = torch.nn.Linear(4, 4)
    weight = layer.weight
    placement = Placement(layer, "cpu", "cpu")
    assert not placement.moves
    with placement.visit():
        assert layer.weight is weight and placement.state == "resident"
    assert placement.state == "home"
    assert same_device("cpu", torch.device("cpu")) and not same_device("cpu", "meta")


def test_module_bytes_counts_stored_bytes_of_parameters_and_buffers():
    layer = torch.nn.Linear(4, 4).to(torch.float16)
    layer.register_buffer("scale", torch.ones(3, dtype=torch.float32))
    assert module_bytes(layer) == (16 + 4) * 2 + 3 * 4


def test_swapped_installs_block_swap_once_per_counts_and_release_removes_it():
    model = tiny_dit()
    placement = Placement(model, "cpu", "cpu", what="DiT")
    counts = SwapCounts(1, 2)
    report = placement.swapped(counts)
    assert (report.double, report.single) == (1, 2) and placement.state == "swapped"
    swap = placement.swap
    assert placement.swapped(counts) is report and placement.swap is swap   # same counts: kept
    placement.swapped(SwapCounts(2, 2))
    assert placement.swap is not swap
    placement.resident()
    assert placement.swap is None and not isinstance(model.placement, BlockSwap)
    placement.swapped(counts)
    assert isinstance(model.placement, BlockSwap)
    placement.release()
    assert placement.swap is None and not isinstance(model.placement, BlockSwap)
