"""Memory planner: 13B budgets, auto swap, bad input, and the out-of-memory translation."""
from __future__ import annotations

import pytest
import torch

import hyvideo_core
from conftest import golden_path
from hyvideo_core.errors import InvalidInputError, OutOfMemoryError
from hyvideo_core.runtime.oom import oom_guard, oom_with_plan
from hyvideo_core.runtime.planner import GiB, PlanInputs, auto_swap, plan, plan_for_model
from hyvideo_core.runtime.weight_table import table_for_format, table_for_model
from hyvideo_core.model.config import PRESETS
from hyvideo_core.weights.storage import storage_for

P13 = PRESETS["hunyuan-video-13b"]
FULL = dict(swap_double=20, swap_single=40)


def test_13b_fp8_720p_full_swap_fits_24gb():
    p = plan(PlanInputs(weight_format="fp8_scaled", width=1280, height=720, frames=129, **FULL))
    print("\n" + p.describe())
    assert p.peak <= 24 * GiB
    assert p.breakdown["DiT weights (resident)"] < 1 * GiB     # only embedders, final layer, norms
    assert p.breakdown["block swap slots"] == 2 * p.breakdown["block swap slots"] // 2 > 0


def test_13b_weight_bytes_per_format():
    bf16 = table_for_format(P13, "bf16", torch.bfloat16).total()
    assert bf16 == 12_821_012_544 * 2                         # SPEC 1.1 parameter count
    ratios = {f: table_for_format(P13, f, torch.bfloat16).total() / bf16 for f in ("fp8_scaled", "Q8_0", "Q4_K")}
    assert ratios["fp8_scaled"] <= 0.52 and ratios["Q4_K"] <= 0.31, ratios
    assert ratios["Q4_K"] < ratios["Q8_0"] < 0.56


def test_auto_swap_picks_the_least_swapping_that_fits():
    inputs = PlanInputs(weight_format="bf16", width=960, height=544)
    budget = 24 * GiB
    chosen = auto_swap(inputs, budget=budget)
    assert chosen.fits(budget)
    n_double, n_single = chosen.swap
    swapped = n_double * 339_831_296 + n_single * 141_591_808
    # every plan that swaps fewer block bytes does not fit
    for d in range(0, 21):
        for s in range(0, 41):
            if d * 339_831_296 + s * 141_591_808 < swapped:
                assert not plan(inputs.replace(swap_double=d, swap_single=s)).fits(budget), (d, s)


def test_no_swap_when_it_fits():
    assert auto_swap(PlanInputs(weight_format="Q4_K", width=960, height=544), budget=80 * GiB).swap == (0, 0)


def test_budget_nothing_fits_names_the_smallest_that_would():
    inputs = PlanInputs(weight_format="fp8_scaled", width=1280, height=720)
    with pytest.raises(OutOfMemoryError, match=r"nothing fits in 8\.0 GiB.*at least \d+\.\d GiB") as info:
        auto_swap(inputs, budget=8 * GiB)
    smallest = info.value.suggestion
    assert smallest.swap == (20, 40) and smallest.inputs.offload_txt_in
    assert auto_swap(inputs, budget=smallest.peak).peak <= smallest.peak   # that budget does work


def test_attention_backends_differ_where_they_should():
    base = PlanInputs(weight_format="fp8_scaled", **FULL)
    math = plan(base.replace(attention="sdpa_math"))
    fused, flash = plan(base), plan(base.replace(attention="flash"))
    assert math.peak > 1000 * GiB            # L x L scores per head at 119k tokens
    assert flash.peak <= fused.peak < 24 * GiB


def test_true_cfg_in_one_batch_doubles_activations():
    one = plan(PlanInputs(weight_format="fp8_scaled", **FULL))
    two = plan(PlanInputs(weight_format="fp8_scaled", cfg_batched=True, **FULL))
    ratio = two.breakdown["block activations (peak)"] / one.breakdown["block activations (peak)"]
    assert 1.95 < ratio < 2.05


def test_vae_tiles_bound_decode_memory():
    tiled = plan(PlanInputs(weight_format="fp8_scaled", **FULL))
    small = plan(PlanInputs(weight_format="fp8_scaled", vae_tile_px=128, vae_tile_frames=32, **FULL))
    untiled = plan(PlanInputs(weight_format="fp8_scaled", vae_tile_px=None, vae_tile_frames=None, **FULL))
    act = "VAE decode tile activations"
    assert small.breakdown[act] < tiled.breakdown[act] < untiled.breakdown[act]
    assert untiled.breakdown[act] > 100 * GiB


def test_plan_for_a_loaded_model_matches_the_format_rule():
    model = hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config="tiny",
                                          dtype=torch.float32, storage=storage_for("fp8_scaled"))
    exact = table_for_model(model)
    rule = table_for_format(model.config, "fp8_scaled", torch.float32)
    assert {u: sorted(v) for u, v in exact.units.items()} == {u: sorted(v) for u, v in rule.units.items()}
    assert exact.largest_quantised == rule.largest_quantised
    inputs = plan_for_model(model, width=96, height=64, frames=9, swap_double=1)
    assert plan(inputs).breakdown["DiT weights (resident)"] == exact.total() - exact.unit_bytes("double_blocks.0")


@pytest.mark.parametrize("changes,match", [
    (dict(width=1000), "multiples of 16"),
    (dict(frames=100), "4k\\+1"),
    (dict(attention="xformers"), "xformers"),
    (dict(weight_format="int4"), "int4"),
    (dict(weight_format="IQ4_XS"), "IQ4_XS is not supported"),
])
def test_bad_plan_inputs(changes, match):
    with pytest.raises(hyvideo_core.HyVideoError, match=match):
        plan(PlanInputs(**changes))


def test_auto_without_budget_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU provides the budget")
    with pytest.raises(InvalidInputError, match="pass budget"):
        auto_swap(PlanInputs(weight_format="fp8_scaled"))


# -- out-of-memory translation ------------------------------------------------------------------

def _inputs():
    return PlanInputs(weight_format="bf16", width=1280, height=720)


def test_oom_during_sampling_becomes_our_error_with_a_plan():
    with pytest.raises(OutOfMemoryError) as info:
        with oom_guard(_inputs(), budget=24 * GiB):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
    err = info.value
    assert "Tried to allocate 3.00 GiB" in str(err) and "Swap" in str(err)
    assert err.suggestion.fits(24 * GiB) and err.suggestion.swap != (0, 0)


def test_oom_message_when_nothing_fits_says_the_minimum():
    err = oom_with_plan(RuntimeError("CUDA out of memory."), _inputs(), budget=6 * GiB)
    assert isinstance(err, OutOfMemoryError) and "at least" in str(err)
    assert err.suggestion.swap == (20, 40)


def test_other_errors_pass_through_the_guard():
    with pytest.raises(ValueError, match="boom"):
        with oom_guard(_inputs(), budget=24 * GiB):
            raise ValueError("boom")
    original = OutOfMemoryError("already ours")
    with pytest.raises(OutOfMemoryError) as info:
        with oom_guard(_inputs(), budget=24 * GiB):
            raise original
    assert info.value is original


def test_auto_swap_keeps_an_asked_for_txt_in_offload():
    roomy = 80 * GiB
    assert auto_swap(PlanInputs(weight_format="fp8_scaled", offload_txt_in=True), budget=roomy).inputs.offload_txt_in
    assert not auto_swap(PlanInputs(weight_format="fp8_scaled"), budget=roomy).inputs.offload_txt_in
