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


# -- several GPUs: the plan per GPU ----------------------------------------------------------------

ACT = "block activations (peak)"
WEIGHTS = "DiT weights (resident)"
P720 = dict(weight_format="bf16", width=1280, height=720, frames=129)


@pytest.mark.parametrize("axis", ["ulysses_degree", "ring_degree"])
def test_activations_per_gpu_fall_as_the_degree_grows_and_weights_stay(axis):
    plans = [plan(PlanInputs(**P720, **{axis: degree})) for degree in (1, 2, 4, 8)]
    activations = [p.breakdown[ACT] for p in plans]
    assert activations == sorted(activations, reverse=True) and len(set(activations)) == 4, activations
    assert activations[-1] < activations[0] / 4   # 8 GPUs: 1/8 of the tokens each, plus exchange buffers
    assert {p.breakdown[WEIGHTS] for p in plans} == {plans[0].breakdown[WEIGHTS]}
    assert "14850 of 118800 image tokens" in plans[-1].describe()
    assert "per GPU of 8" in plans[-1].describe()


def test_mixed_degrees_and_uneven_sequences_are_priced_per_gpu():
    four_by_two = plan(PlanInputs(**P720, ulysses_degree=4, ring_degree=2))
    assert plan(PlanInputs(**P720, ulysses_degree=8)).breakdown[ACT] < four_by_two.breakdown[ACT] \
        < plan(PlanInputs(**P720, ulysses_degree=4)).breakdown[ACT]
    uneven = plan(PlanInputs(**P720, ring_degree=7))     # 118800 / 7 is not whole: padded up
    assert "16972 of 118800 image tokens (padded by 4)" in uneven.describe()


def test_attention_under_sequence_parallel_holds_the_head_shard_or_ring_chunks():
    """sdpa_math materialises the scores, so it shows what each algorithm attends at once: Ulysses
    runs the model's backend on all queries x all keys for 1/U of the heads; the ring takes one
    K/V chunk at a time through the log-sum-exp kernel (linear in L, whatever the backend)."""
    from hyvideo_core.runtime.activations import Tokens, attention_transient
    n, T = 118800, 256
    alone = attention_transient(P13, Tokens(1, n, T), 2, "sdpa_math")
    ulysses = attention_transient(P13, Tokens(1, n // 8, T, ulysses=8), 2, "sdpa_math")
    ring = attention_transient(P13, Tokens(1, n // 8, T, ring=8), 2, "sdpa_math")
    assert ulysses == pytest.approx(alone / 8, rel=0.02)
    assert ring == attention_transient(P13, Tokens(1, n // 8, T, ring=8), 2, "sdpa") < alone / 500
    # the all-to-all: send, receive and reordered copies of the stacked q/k/v beside the stack itself
    local = (n // 8) * P13.hidden_size * 2
    assert attention_transient(P13, Tokens(1, n // 8, T, ulysses=8), 2, "sdpa") >= 12 * local


def test_ulysses_8_fits_a_card_the_720p_video_does_not_fit_alone():
    card = 32 * GiB
    alone, eight = PlanInputs(**P720), PlanInputs(**P720, ulysses_degree=8)
    assert not plan(alone).fits(card) and plan(eight).fits(card)
    assert auto_swap(alone, budget=card).swap != (0, 0)      # alone it needs block swapping
    assert auto_swap(eight, budget=card).swap == (0, 0)      # per GPU of 8 it does not


def test_cfg_parallel_halves_the_batch_of_true_cfg():
    cfg = plan(PlanInputs(**P720, cfg_batched=True, ulysses_degree=4))
    split = plan(PlanInputs(**P720, cfg_batched=True, cfg_parallel=True, ulysses_degree=4))
    no_cfg = plan(PlanInputs(**P720, ulysses_degree=4))
    assert split.breakdown[ACT] == no_cfg.breakdown[ACT] < cfg.breakdown[ACT]
    assert split.inputs.gpus == 8 and "x cfg 2" in split.describe()


@pytest.mark.parametrize("changes,gpus,match", [
    (dict(ulysses_degree=5), None, r"ulysses_degree=5 does not divide the model's 24 .*allowed: 1, 2, 3, 4, 6, 8, 12"),
    (dict(ring_degree=0), None, "ring_degree=0"),
    (dict(cfg_parallel=True), None, "cfg_parallel .*true CFG"),
    (dict(ulysses_degree=4), 8, r"8 GPU\(s\) but ulysses 4 x ring 1 = 4; .*1x8, 2x4, 4x2, 8x1; .*1x4, 2x2, 4x1 with"),
    (dict(ulysses_degree=2, ring_degree=2, cfg_parallel=True, cfg_batched=True), 4, r"= 8; with 4 GPU"),
])
def test_invalid_parallel_degrees_are_refused_naming_the_allowed_values(changes, gpus, match):
    from hyvideo_core.runtime.planner import check_parallel
    inputs = PlanInputs(**changes)
    with pytest.raises(InvalidInputError, match=match):
        check_parallel(inputs, gpus=gpus) if gpus else plan(inputs)


def test_the_memory_plan_node_plans_per_gpu():
    from harness.pack import pack_module
    node = pack_module("nodes.plan").HyVideoMemoryPlan()
    settings = dict(width=1280, height=720, frames=129, weight_format="bf16", attention="sdpa",
                    double_blocks_to_swap=0, single_blocks_to_swap=0, true_cfg_scale=1.0, vae_tiling="auto",
                    vram_budget_gb=32.0)
    assert node.estimate(**settings)["result"][0].startswith("does NOT fit in 32.0 GiB")
    text = node.estimate(**settings, ulysses_degree=8)["result"][0]
    assert text.startswith("fits in 32.0 GiB") and "each of 8" in text and "14850 of 118800" in text
    with pytest.raises(InvalidInputError, match="true CFG"):
        node.estimate(**settings, ulysses_degree=4, cfg_parallel=True)


def test_the_memory_plan_node_plans_one_context_window():
    from harness.pack import pack_module
    from hyvideo_core.sampling import ContextWindows
    node = pack_module("nodes.plan").HyVideoMemoryPlan()
    settings = dict(width=960, height=544, frames=257, weight_format="bf16", attention="sdpa",
                    double_blocks_to_swap=0, single_blocks_to_swap=0, true_cfg_scale=1.0, vae_tiling="auto",
                    vram_budget_gb=80.0)
    whole = node.estimate(**settings)["result"][0]
    windowed = node.estimate(**settings, context=ContextWindows(129, 32))["result"][0]
    one = node.estimate(**{**settings, "frames": 129})["result"][0]
    assert "planned for one window of 129 of the 257 frames" in windowed
    peak = lambda text: float(text.split("peak ")[1].split(" GiB")[0])   # noqa: E731
    assert peak(windowed) == peak(one) < peak(whole)


SP_MEMORY_SCRIPT = r'''
import datetime, gc, json, socket, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def peak_of(fn):
    fn(); gc.collect()
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS:")
    out = fn()
    peak = status("VmHWM:") - base
    del out; gc.collect()
    return peak

def rank_main(rank, port):
    from hyvideo_core.model.attention import SDPA
    from hyvideo_core.model.config import PRESETS
    from hyvideo_core.parallel.attention import ParallelAttention, ShardLayout
    from hyvideo_core.parallel.comm import Traffic
    from hyvideo_core.parallel.config import ParallelConfig, build_groups
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    cfg, n, text = PRESETS["medium"], 1024, 256
    q, k, v = (torch.randn(1, n + text, cfg.heads, cfg.head_dim) for _ in range(3))
    res = {}
    with torch.no_grad():
        for u, r in ((2, 1), (1, 2)):
            attention = ParallelAttention(SDPA(), build_groups(ParallelConfig(u, r)), Traffic())
            res[f"{u}x{r}"] = peak_of(lambda: attention(q, k, v, ShardLayout(2 * n, n, None)))
    if rank == 0:
        print(json.dumps(res), flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_main, args=(port,), nprocs=2)
'''


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self")
def test_sequence_parallel_attention_memory_matches_measurement(tmp_path):
    """The planner's Ulysses and ring attention counts against the policy's real attention on 2
    gloo ranks (peak RSS growth, as tests/test_planner_activations.py measures one device)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    from hyvideo_core.model.config import PRESETS
    from hyvideo_core.runtime.activations import Tokens, sequence_parallel_transient
    script = tmp_path / "sp_memory.py"
    script.write_text(SP_MEMORY_SCRIPT)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    for layout, (u, r) in (("2x1", (2, 1)), ("1x2", (1, 2))):
        predicted = sequence_parallel_transient(PRESETS["medium"], Tokens(1, 1024, 256, u, r), 4, "sdpa")
        print(f"{layout}: predicted {predicted / 2**20:.1f} MiB, measured {measured[layout] / 2**20:.1f} MiB")
        assert measured[layout] == pytest.approx(predicted, rel=0.06), layout
