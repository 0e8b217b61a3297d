"""benchmarks/gpu_check.py on the CPU: its counts, writer, comparisons and messages, and one
dry run through every section (tiny shapes), so the script is known to run before a GPU is."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check_common as common  # noqa: E402
from gpu_check_dit import RandomSource, attention_status, model_shapes, official_shapes_file, reduced  # noqa: E402
from gpu_check_flops import block_flops, forward_flops  # noqa: E402
from gpu_check_summary import summary_rows  # noqa: E402
from gpu_check_tests import marked_files, parse_junit  # noqa: E402
from hyvideo_core.model.config import PRESETS  # noqa: E402

SECTIONS = ("tests", "gemm", "dit_blocks", "dit_full", "vae", "parallel")
# What a bare CUDA machine lacks: the check must not need any of it (pytest only for its tests).
OPTIONAL = ("gguf", "diffusers", "imageio", "imageio_ffmpeg", "psutil", "tqdm", "aiohttp", "pytest")
BLOCKER = f"""
import sys
for name in {OPTIONAL!r}:   # None in sys.modules: import raises ModuleNotFoundError, find_spec gives None
    sys.modules[name] = None
"""

def _run(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# -- the analytic FLOP count (SPEC 10.1) ---------------------------------------------------------------
@pytest.mark.parametrize("size, tokens, linear, attention, total", [
    ((1280, 720, 129), 119_056, 1.62e15, 10.45e15, 12.07e15),
    ((960, 544, 129), 67_576, 0.92e15, 3.37e15, 4.29e15),
])
def test_flops_match_the_spec_table(size, tokens, linear, attention, total):
    count = forward_flops(PRESETS["hunyuan-video-13b"], common.Size(*size).latent, 256)
    assert count.tokens == tokens
    assert count.linear == pytest.approx(linear, rel=4e-3)
    assert count.attention == pytest.approx(attention, rel=4e-3)
    assert count.total == pytest.approx(total, rel=2e-3)


def test_flops_by_hand_for_the_tiny_config():
    tiny = PRESETS["tiny"]                     # D 64, MLP 256, 2 + 2 blocks, patch 1x2x2
    count = forward_flops(tiny, (3, 6, 8), 16)  # 3 x 3 x 4 = 36 image tokens + 16 text
    L, D = 52, 64
    per_block_linear = 2 * L * (4 * D * D + 2 * D * 256)   # = 24 D^2 L for an MLP ratio of 4
    assert per_block_linear == 24 * D * D * L
    assert count.tokens == L
    assert count.linear == 4 * per_block_linear and count.attention == 4 * 4 * L * L * D
    assert block_flops(tiny, L) == (per_block_linear, 4 * L * L * D)


# -- the model's shapes and random weights -----------------------------------------------------------------
@pytest.mark.skipif(official_shapes_file() is None, reason="shared/reference is not next to this checkout")
def test_the_13b_preset_has_the_official_shapes():
    found = model_shapes("13b")   # raises when the json and the preset differ
    assert found.source == str(official_shapes_file())
    assert len(found.shapes) == 856
    assert sum(math.prod(s) for s in found.shapes.values()) == 12_821_012_544   # SPEC 1.1


def test_random_source_is_reproducible_per_key_and_reduced_keeps_block_zero():
    shapes = model_shapes("tiny").shapes
    a, b = RandomSource(shapes, "cpu", torch.float32), RandomSource(shapes, "cpu", torch.float32)
    key = "double_blocks.1.img_attn_qkv.weight"
    assert torch.equal(a.get(key), b.get(key))               # two loads hold the same weights
    assert not torch.equal(a.get(key), a.get("double_blocks.0.img_attn_qkv.weight"))
    assert 0.5 < float(a.get(key).std() * shapes[key][1] ** 0.5) < 1.5   # ~ N(0, 1/fan_in)
    small = reduced(shapes)
    assert not any(k.startswith(("double_blocks.1.", "single_blocks.1.")) for k in small)
    assert "double_blocks.0.img_attn_qkv.weight" in small and "final_layer.linear.weight" in small


# -- JSON, comparisons, guard, messages ------------------------------------------------------------------
@dataclass
class _Figures:
    size: tuple
    dtype: torch.dtype
    value: float


def test_json_writer_converts_and_replaces_atomically(tmp_path):
    target = tmp_path / "sub" / "report.json"
    common.write_json(target, {"a": _Figures((1, 2), torch.bfloat16, float("nan")), "b": [float("inf"), 3]})
    assert json.loads(target.read_text()) == {"a": {"size": [1, 2], "dtype": "torch.bfloat16", "value": None},
                                              "b": [None, 3]}
    common.write_json(target, {"again": True})
    assert json.loads(target.read_text()) == {"again": True}
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]   # no temporary left


def test_memory_comparison_against_the_planner():
    from hyvideo_core.runtime.planner import plan, plan_for_model
    from gpu_check_dit import load_random
    model = load_random(model_shapes("tiny").shapes, torch.device("cpu"))
    size = dict(width=64, height=48, frames=9, attention="sdpa", text_tokens=16)
    resident, swapped = plan(plan_for_model(model, **size)), plan(plan_for_model(model, swap_double=2, swap_single=2,
                                                                                 **size))
    assert swapped.breakdown["DiT weights (resident)"] < resident.breakdown["DiT weights (resident)"]
    c = common.compare_memory("x", resident.sampling_peak // 2, resident.sampling_peak, "m")
    assert c.ratio == 0.5 and c.predicted_gib == round(resident.sampling_peak / 2**30, 4)
    assert common.compare_memory("x", None, 10, None).ratio is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_cpu_peak_memory_sees_an_allocation():
    size = 64 * 2**20
    with common.PeakMemory(torch.device("cpu")) as peak:
        block = common.touched_mapping(size)   # alive when the peak is read
    block.close()
    if peak.method is None:
        pytest.skip("this kernel's VmHWM does not follow a fresh allocation after clear_refs")
    assert peak.peak >= 0.9 * 64 * 2**20


def test_time_guard_skips_and_errors_are_recorded_not_raised():
    now = [0.0]
    guard = common.TimeGuard(100.0, clock=lambda: now[0])
    ok = common.run_section("a", guard, 10, lambda r: r.data.update(x=1), torch.device("cpu"))
    assert ok.status == "ok" and ok.data == {"x": 1}
    failed = common.run_section("b", guard, 10, lambda r: 1 / 0, torch.device("cpu"))
    assert failed.status == "error" and failed.error.startswith("ZeroDivisionError") and failed.traceback
    now[0] = 95.0
    skipped = common.run_section("c", guard, 10, lambda r: pytest.fail("must not run"), torch.device("cpu"))
    assert skipped.status == "skipped" and "time guard" in skipped.notes[0]
    rows = summary_rows({"sections": {"b": failed, "c": skipped}, "wall_s": 1.0})
    assert [r["item"] for r in rows] == ["error", "skipped", "wall time"]


def test_attention_backends_not_installed_are_reported(monkeypatch):
    import gpu_check_dit
    monkeypatch.setattr(gpu_check_dit, "installed", lambda name: False)
    assert attention_status("flash", torch.device("cpu")) == "not installed"
    assert attention_status("sage", torch.device("cuda")) == "not installed"
    assert attention_status("sdpa", torch.device("cpu")) is None
    monkeypatch.setattr(gpu_check_dit, "installed", lambda name: True)
    assert attention_status("flash", torch.device("cpu")) == "not run: CUDA only"


def test_without_cuda_it_stops_at_once_with_a_clear_message(tmp_path):
    out = _run("--json", str(tmp_path / "r.json"), env={"CUDA_VISIBLE_DEVICES": ""}, timeout=60)
    assert out.returncode == 2
    assert "CUDA" in out.stderr and "--dry-run" in out.stderr
    assert not (tmp_path / "r.json").exists()


def test_junit_counts_and_marked_files(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="t" name="ok" time="0.1"/>'
                   '<testcase classname="t" name="bad"><failure message="boom"/></testcase>'
                   '<testcase classname="t" name="later"><skipped message="needs a CUDA device"/></testcase>'
                   '<testcase classname="" name="tests.test_x"><error message="ImportError"/></testcase>'
                   '</testsuite></testsuites>')
    cases = parse_junit(xml)
    assert [c.outcome for c in cases] == ["passed", "failed", "skipped", "error"]
    assert cases[1].message == "boom" and cases[0].name == "t::ok"
    assert ROOT / "tests" / "test_block_swap.py" in marked_files()
    assert '"cuda: needs a CUDA GPU' in (ROOT / "pyproject.toml").read_text()   # the marker is registered


# -- the dry run, end to end --------------------------------------------------------------------------------
def test_dry_run_goes_through_every_section(tmp_path):
    report = tmp_path / "gpu_check.json"
    out = _run("--dry-run", "--json", str(report))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads(report.read_text())
    sections = data["sections"]
    assert tuple(sections) == SECTIONS
    for name, s in sections.items():
        assert s["status"] == "ok" and s["error"] is None, (name, s)
    tests = sections["tests"]["data"]["run"]
    assert tests["skipped"] >= 1 and tests["failed"] == tests["errors"] == 0   # CPU: the CUDA tests skip
    variants = sections["dit_blocks"]["data"]["variants"]
    for name in ("bf16_sdpa", "fp8_scaled", "fp8_fast"):
        assert variants[name]["status"] == "ok" and len(variants[name]["times"]) == 2
    assert variants["fp8_fast"]["fp8_path"] == "dequantize"             # no _scaled_mm on a CPU
    assert 0 < variants["fp8_scaled"]["rel_error_vs_plain"] < 0.1
    full = sections["dit_full"]["data"]
    assert full["teacache"]["steps"] == 10 and full["swap"]["prefetched_hits"] > 0
    assert full["resident"]["peak"]["predicted_gib"] > 0
    assert sections["vae"]["data"]["tiled_large"]["tiles_total"] > 1
    ranks = sections["parallel"]["data"]["parallel"]["ranks"]
    assert len(ranks) == 2 and max(r["rel_max_diff"] for r in ranks) < 1e-5
    assert data["summary"] and "wall time" in out.stdout


def test_dry_run_needs_none_of_the_optional_packages(tmp_path):
    """As on a bare CUDA machine: every section but the tests (which need pytest) with the optional
    packages made unimportable, in this process and in the parallel ranks it spawns."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    report = tmp_path / "r.json"
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    out = _run("--dry-run", "--only", ",".join(SECTIONS[1:]), "--json", str(report), env={"PYTHONPATH": path})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads(report.read_text())
    assert all(s["status"] == "ok" for s in data["sections"].values())
    assert data["environment"]["packages"]["gguf"] == "absent"
