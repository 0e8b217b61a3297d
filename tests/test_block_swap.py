"""Block swapping: identical outputs, bounded residency, exact planner bytes, fp8/GGUF/LoRA, clamping."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
from gguf import GGMLQuantizationType as Q

import hyvideo_core
from conftest import golden_path, golden_tensors
from hyvideo_core.model.transformer import StayInPlace
from hyvideo_core.runtime.block_swap import BlockSwap
from hyvideo_core.runtime.planner import PlanInputs, plan
from gguf_write import write_gguf
from hyvideo_core.weights.storage import storage_for

SWAPS = [(1, 1, False), (2, 2, False), (2, 0, True), (0, 2, False)]


@pytest.fixture(scope="module")
def case():
    return golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")


@pytest.fixture(scope="module")
def gguf_path(golden_dit_weights, tmp_path_factory):
    return write_gguf(golden_dit_weights, tmp_path_factory.mktemp("gguf") / "tiny-Q8_0.gguf", Q.Q8_0)


def _load(fmt, gguf_path=None):
    source = gguf_path if fmt == "Q8_0" else golden_path("dit", "weights.safetensors")
    storage = storage_for("gguf" if fmt == "Q8_0" else fmt)
    return hyvideo_core.load_transformer(source, config="tiny", dtype=torch.float32, storage=storage)


def _run(model, case):
    with torch.no_grad():
        return model(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])


def _tensors(module):
    return [t for m in module.modules() for t in [*m._parameters.values(), *m._buffers.values()] if t is not None]


class Residency:
    """Watches where every swappable module's tensors are whenever any module starts running.

    A swapped module is 'on the main device' when its tensors are not the host tensors it had
    before the swap was installed (on a CPU the slot copies are separate memory); main-device
    bytes = unique tensors of the modules that are not swapped + the slot buffers."""

    def __init__(self, model, swap):
        self.model, self.swap = model, swap
        self.units = swap.swapped_modules()
        self.host = {id(u): {t.data_ptr() for t in _tensors(u)} for u in self.units}
        self.max_on_main, self.max_bytes, self.events, self.ran_off_main = 0, 0, 0, []
        watched = [*model.double_blocks, *model.single_blocks, model.img_in, model.txt_in]
        self.handles = [m.register_forward_pre_hook(self._check(m)) for m in watched]

    def on_main(self, unit) -> bool:
        return not any(t.data_ptr() in self.host[id(unit)] for t in _tensors(unit))

    def _check(self, module):
        def hook(mod, args):
            self.events += 1
            on_main = [u for u in self.units if self.on_main(u)]
            self.max_on_main = max(self.max_on_main, len(on_main))
            if module in self.units and module not in on_main:
                self.ran_off_main.append(module)
            self.max_bytes = max(self.max_bytes, self.main_bytes())
        return hook

    def main_bytes(self) -> int:
        swapped = {id(t) for u in self.units for t in _tensors(u)}
        seen, total = set(), 0
        for t in _tensors(self.model):
            if id(t) not in swapped and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total + sum(b.numel() for b in self.swap.slot_buffers())


@pytest.mark.parametrize("fmt", ["fp32", "fp8_scaled", "Q8_0"])
@pytest.mark.parametrize("n_double,n_single,txt_in", SWAPS)
def test_swapped_output_is_bit_identical(fmt, n_double, n_single, txt_in, case, gguf_path):
    model = _load(fmt, gguf_path)
    reference = _run(model, case)
    swap = BlockSwap(n_double, n_single, main="cpu", simulate=True, offload_txt_in=txt_in)
    swap.install(model)
    watch = Residency(model, swap)
    first, second = _run(model, case), _run(model, case)
    assert torch.equal(first, reference) and torch.equal(second, reference)
    units = n_double + n_single + txt_in
    assert watch.ran_off_main == []            # every swapped module computed from its device copy
    assert watch.max_on_main <= 1              # ... and only one is bound at a time (+1 prefetched slot)
    # Each enter prefetches the next swapped module (wrapping to the next step); with <= 2 swapped
    # modules both fit the two slots and are never copied again.
    assert swap.stats.fetches == {1: 1, 2: 2}.get(units, 1 + 2 * units)
    assert swap.stats.prefetched_hits == {1: 1}.get(units, 2 * units - 1)
    assert len(swap.slot_buffers()) == (2 if units > 1 else 1)
    assert all(not watch.on_main(u) for u in watch.units)  # after the run everything is back on host


@pytest.mark.parametrize("fmt", ["fp32", "fp8_scaled", "Q8_0"])
@pytest.mark.parametrize("n_double,n_single,txt_in", SWAPS + [(0, 0, False)])
def test_planner_predicts_main_device_weight_bytes_exactly(fmt, n_double, n_single, txt_in, case, gguf_path):
    model = _load(fmt, gguf_path)
    swap = BlockSwap(n_double, n_single, main="cpu", simulate=True, offload_txt_in=txt_in)
    swap.install(model)
    watch = Residency(model, swap)
    _run(model, case)
    predicted = plan(PlanInputs(config=model.config, weight_format=fmt, compute_dtype=torch.float32,
                                width=96, height=64, frames=9, swap_double=n_double, swap_single=n_single,
                                offload_txt_in=txt_in))
    weights = predicted.breakdown["DiT weights (resident)"] + predicted.breakdown["block swap slots"]
    assert watch.events > 0
    assert weights == watch.max_bytes


def test_resident_parts_go_to_main_and_swapped_stay_on_offload():
    model = _load("fp8_scaled")
    BlockSwap(1, 1, main="meta", offload="cpu").install(model)  # a stand-in 'main device'
    assert model.placement.report.moves
    for block in (model.double_blocks[0], model.single_blocks[0]):
        assert all(t.device.type == "cpu" for t in _tensors(block))
    for part in (model.double_blocks[1], model.single_blocks[1], model.txt_in, model.final_layer):
        assert all(t.device.type == "meta" for t in _tensors(part))
    assert model.double_blocks[1].img_attn_qkv.weight.dtype == torch.float8_e4m3fn  # bytes moved, not cast
    assert all(b.device.type == "meta" for b in model.placement.slot_buffers())


def test_same_device_swap_moves_nothing(case):
    model = _load("fp32")
    before = [t.data_ptr() for t in _tensors(model)]
    swap = BlockSwap(20, 40, main="cpu")
    report = swap.install(model)
    out = _run(model, case)
    assert not report.moves and swap.slot_buffers() == [] and swap.stats.fetches == 0
    assert swap.stats.enters == 4
    assert [t.data_ptr() for t in _tensors(model)] == before
    assert torch.equal(out, _run(_load("fp32"), case))
    assert not torch.cuda.is_initialized()


def test_swap_counts_beyond_the_model_are_clamped_and_reported(caplog):
    model = _load("fp32")
    with caplog.at_level(logging.WARNING):
        report = BlockSwap(25, 99, main="cpu", simulate=True).install(model)
    assert (report.double, report.single, report.clamped) == (2, 2, True)
    assert "asked for 25 double + 99 single" in caplog.text
    assert "clamped" in report.summary()
    predicted = plan(PlanInputs(config=model.config, weight_format="fp32", width=96, height=64, frames=9,
                                swap_double=25, swap_single=99))
    assert predicted.swap == (2, 2) and any("clamped" in n for n in predicted.notes)


def test_negative_counts_are_rejected():
    from hyvideo_core.errors import InvalidInputError
    with pytest.raises(InvalidInputError, match="double=-1"):
        BlockSwap(-1, 0)


class LowRank(nn.Module):
    """A runtime LoRA adapter as the ops protocol describes: non-persistent buffers, delta(x)."""

    def __init__(self, layer, rank=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("down", torch.randn(rank, layer.in_features, generator=g) * 0.1, persistent=False)
        self.register_buffer("up", torch.randn(layer.out_features, rank, generator=g) * 0.1, persistent=False)

    def forward(self, x):
        return x @ self.down.t() @ self.up.t()


def _add_adapters(model):
    for block in (model.double_blocks[0], model.single_blocks[0]):
        for layer in (getattr(block, "img_attn_qkv", None), getattr(block, "linear2", None)):
            if layer is not None:  # ops protocol: a registered ModuleList named `adapters`
                layer.adapters = nn.ModuleList([LowRank(layer)])


@pytest.mark.parametrize("fmt", ["fp8_scaled", "Q8_0"])
def test_adapters_added_after_install_move_with_their_block(fmt, case, gguf_path):
    reference_model = _load(fmt, gguf_path)
    _add_adapters(reference_model)
    reference = _run(reference_model, case)
    model = _load(fmt, gguf_path)
    swap = BlockSwap(1, 1, main="cpu", simulate=True)
    swap.install(model)
    _run(model, case)        # slots sized and filled without adapters
    _add_adapters(model)     # e.g. a LoRA applied to an already-swapped model
    adapter = model.double_blocks[0].img_attn_qkv.adapters[0]
    seen = {}
    adapter.register_forward_pre_hook(lambda m, a: seen.setdefault("ptr", m.down.data_ptr()) and None)
    host_ptr = adapter.down.data_ptr()
    out = _run(model, case)
    assert torch.equal(out, reference)
    assert seen["ptr"] != host_ptr                   # the adapter ran from the device copy
    assert adapter.down.data_ptr() == host_ptr       # and is back on its host copy afterwards
    assert adapter.down.is_contiguous() and "down" not in model.state_dict()


def test_remove_restores_default_placement(case):
    model = _load("fp32")
    reference = _run(model, case)
    swap = BlockSwap(2, 2, main="cpu", simulate=True, offload_txt_in=True)
    swap.install(model)
    swap.remove()
    assert isinstance(model.placement, StayInPlace) and swap.slot_buffers() == []
    assert not model.txt_in._forward_pre_hooks
    assert torch.equal(_run(model, case), reference)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_swap_prefetches_on_a_side_stream(case):  # pragma: no cover - not run in CI
    model = _load("fp8_scaled")
    reference = _run(model, case)
    swap = BlockSwap(2, 2, main="cuda")
    swap.install(model)
    gpu_case = {k: v.cuda() for k, v in case.items()}
    out = _run(model, gpu_case).cpu()
    assert torch.equal(out, reference.cpu()) or torch.allclose(out, reference, atol=1e-5)
    assert model.double_blocks[0].img_attn_qkv.weight.is_pinned()
    assert swap.stats.prefetched_hits == 3
