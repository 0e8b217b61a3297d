"""The short table at the end of a GPU check: ratios and absolute times, one row per figure.

Rows are also stored in the JSON (`summary`), so the table can be quoted from the file. Every
row reads its section defensively: a skipped or failed section gives one row saying so.
"""
from __future__ import annotations


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return text + unit
    return f"{value}{unit}"


def _row(section: str, item: str, value: str, note: str = "") -> dict:
    return {"section": section, "item": item, "value": value, "note": note}


def summary_rows(report: dict) -> list[dict]:
    rows = []
    for name, s in report["sections"].items():
        if s.status != "ok":
            rows.append(_row(name, s.status, s.error or "; ".join(s.notes) or "-"))
            continue
        rows += _ROWS.get(name, lambda d: [])(s.data)
    rows.append(_row("run", "wall time", _fmt(report.get("wall_s"), " s")))
    return rows


def _tests(d):
    r = d["run"]
    return [_row("tests", "CUDA-only tests", f"{r.passed} passed, {r.failed} failed, {r.errors} errors, "
                 f"{r.skipped} skipped", ", ".join(r.files))]


def _gemm(d):
    rows = [_row("gemm", f"{d['plain'].dtype} GEMM {d['plain'].size}^3", _fmt(d["plain"].flops_per_s / 1e12, " TFLOP/s"))]
    fp8 = d.get("fp8_scaled_mm")
    rows.append(_row("gemm", "fp8 _scaled_mm", fp8 if isinstance(fp8, str) else _fmt(fp8.flops_per_s / 1e12, " TFLOP/s")))
    return rows


def _blocks(d):
    rows = []
    variants = d.get("variants", {})
    base = variants.get("bf16_sdpa")
    for name, v in variants.items():
        if v.status != "ok":
            rows.append(_row("dit_blocks", name, v.status))
            continue
        for t in v.times:
            ratio = ""
            if base is not None and base.status == "ok" and name != base.variant:
                ref = next((b for b in base.times if b.size == t.size), None)
                ratio = f"{t.step_s / ref.step_s:.3f}x bf16_sdpa" if ref else ""
            rows.append(_row("dit_blocks", f"{name} step {t.size}", _fmt(t.step_s, " s"),
                             f"extrapolated; {_fmt(v.achieved_tflops[t.size])} TFLOP/s = "
                             f"{_fmt(v.fraction_of_gemm[t.size])} of GEMM; {ratio}".rstrip("; ")))
        if v.rel_error_vs_plain is not None:
            rows.append(_row("dit_blocks", f"{name} rel. error vs plain", _fmt(v.rel_error_vs_plain),
                             f"fp8 path: {v.fp8_path}" if v.fp8_path else ""))
    c = d.get("compile")
    if c is not None:
        rows.append(_row("dit_blocks", f"torch.compile ({c.backend}) {c.size}", f"step {c.step_ratio:.3f}x eager",
                         f"compile {c.compile_s:.1f} s"))
    return rows


def _full(d):
    rows = []
    check = d.get("extrapolation_check")
    resident, swapped = d.get("resident"), d.get("swapped")
    if resident is not None:
        rows.append(_row("dit_full", f"{d.get('blocks', '')}-block step {d['size']}", _fmt(resident.step_s, " s"),
                         f"measured/extrapolated {check['measured_over_extrapolated']:.3f}" if check else ""))
    for run in (resident, swapped):
        if run is not None and run.peak is not None:
            rows.append(_row("dit_full", f"{run.label}: peak measured/planner", _fmt(run.peak.ratio),
                             f"{_fmt(run.peak.measured_gib)} / {_fmt(run.peak.predicted_gib)} GiB"))
    swap = d.get("swap")
    if swap is not None:
        rows.append(_row("dit_full", f"swap {swap.double}+{swap.single} (prefetch) / no swap", f"{swap.time_ratio:.3f}x",
                         f"{swapped.step_s:.3g} s a step, {_fmt(swap.gib_copied_per_step)} GiB copied a step, "
                         f"install {swap.install_s:.1f} s"))
    tea = d.get("teacache")
    if tea is not None:
        rows.append(_row("dit_full", f"TeaCache {tea.threshold} over {tea.steps} steps", f"{tea.wall_ratio:.3f}x wall",
                         f"{tea.skipped} of {tea.steps} forwards skipped (random weights: indicative)"))
    return rows


def _vae(d):
    rows = []
    for key in ("tiled_large", "small_untiled", "small_tiled"):
        run = d.get(key)
        if run is None:
            continue
        when = "" if run.complete else f" (extrapolated from {run.tiles_done}/{run.tiles_total} tiles)"
        rows.append(_row("vae", f"decode {run.size} {run.tiles}", _fmt(run.seconds_extrapolated, " s") + when,
                         f"peak measured/predicted {_fmt(run.memory.ratio)} "
                         f"({_fmt(run.memory.measured_gib)} / {_fmt(run.memory.predicted_gib)} GiB)"))
    if "small_tiled_over_untiled_time" in d:
        rows.append(_row("vae", "tiled / untiled time (small)", f"{d['small_tiled_over_untiled_time']:.3f}x"))
    return rows


def _parallel(d):
    p = d.get("parallel")
    if p is None:
        return []
    worst = max(r.rel_max_diff for r in p.ranks)
    return [_row("parallel", f"Ulysses {p.world} ({p.backend}) vs 1 process, {p.config} {p.size}",
                 f"{p.speedup:.3f}x speed-up", f"max rel. difference {worst:.2e}")]


_ROWS = {"tests": _tests, "gemm": _gemm, "dit_blocks": _blocks, "dit_full": _full, "vae": _vae, "parallel": _parallel}


def print_table(rows: list[dict]) -> None:
    width = max((len(r["item"]) for r in rows), default=10)
    value_width = max((len(r["value"]) for r in rows), default=10)
    print()
    for r in rows:
        print(f"{r['section']:<11} {r['item']:<{width}}  {r['value']:<{value_width}}  {r['note']}")
