"""Our DiT under ComfyUI's native samplers in the node harness (no server): run under ComfyUI's
Python by tests/test_harness_native.py, it writes a JSON report of latent differences.

    COMFYUI_PATH=... $COMFYUI_PYTHON tests/harness_native_run.py ROOT REPORT.json

ROOT/models holds the tiny models (`write_case_models`, which the test calls first).

Each case runs one prompt through harness.in_comfyui's PromptRunner: native KSampler (euler,
simple) or SamplerCustomAdvanced on HunyuanVideo To Native MODEL next to our own sampler node,
plain, fp8 + block swap, with a LoRA and with TeaCache, and one native run interrupted mid-way.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness import file_inputs
from harness.in_comfyui import comfyui_runner
from native_prompts import (block_swap, ksampler, loader, lora_select, native, ours, sampler_custom_advanced,
                            teacache, text_nodes)
from node_graphs import sampled
from tiny_models import write_dit, write_models


class KeepLatent:
    """A sink for a latent: the runner, like ComfyUI, runs only output nodes and their ancestors."""
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "keep"
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",)}}

    def keep(self, latent):
        return {"ui": {}}


def with_sinks(prompt: dict, pairs) -> dict:
    compared = {node for pair in pairs for node in pair}
    return {**prompt, **{f"keep_{node}": {"class_type": "KeepLatent", "inputs": {"latent": [node, 0]}}
                         for node in compared}}


def cases() -> dict[str, tuple[dict, list[tuple[str, str]]]]:
    """name -> (prompt, pairs of sampler nodes whose latents are compared)."""
    text = text_nodes()
    return {
        "plain": ({**text, "m1": loader(), "n1": native(["m1", 0]), "a": ours(["m1", 0], 4, 3),
                   "b": ksampler(["n1", 0], 4, 3), "c": ksampler(["n1", 0], 4, 4)}, [("a", "b"), ("a", "c")]),
        "advanced": ({**text, "m1": loader(), "n1": native(["m1", 0]), **sampler_custom_advanced(5, 11, 9.0),
                      "a": ours(["m1", 0], 5, 11, shift=9.0)}, [("a", "x1")]),
        "fp8_swap": ({**text, "w1": block_swap(), "m1": loader("fp8_e4m3fn", ["w1", 0]), "m2": loader(),
                      "n1": native(["m1", 0]), "n2": native(["m2", 0]), "a": ours(["m1", 0], 4, 5),
                      "b": ksampler(["n1", 0], 4, 5), "c": ksampler(["n2", 0], 4, 5)}, [("a", "b"), ("b", "c")]),
        "lora": ({**text, "m1": loader(), "l1": lora_select(["m1", 0]), "n1": native(["l1", 0]),
                  "n0": native(["m1", 0]), "a": ours(["l1", 0], 4, 7), "b": ksampler(["n1", 0], 4, 7),
                  "c": ksampler(["n0", 0], 4, 7), "d": ours(["m1", 0], 4, 7)}, [("a", "b"), ("b", "c"), ("c", "d")]),
        "teacache": ({**text, "m1": loader(), "c1": teacache(1.0), "n1": native(["m1", 0], cache=["c1", 0]),
                      "n0": native(["m1", 0]), "a": ours(["m1", 0], 5, 9, cache=["c1", 0]),
                      "b": ksampler(["n1", 0], 5, 9), "c": ksampler(["n0", 0], 5, 9)}, [("a", "b"), ("b", "c")]),
    }


def report_case(result, pairs) -> dict:
    if not result.ok:
        return {"status": result.status, "error": result.describe()}
    first = pairs[0][0]
    diffs = {f"{a}-{b}": float((sampled(result, a) - sampled(result, b)).abs().max()) for a, b in pairs}
    entry = {"status": result.status, "diffs": diffs, "shape": list(sampled(result, first).shape),
             "abs": float(sampled(result, first).abs().max()), "texts": {n: ui.get("text", []) for n, ui in
                                                                        result.outputs.items()},
             "progress_nodes": sorted({node for node, *_ in result.progress if node})}
    native_model = result.results.get("n1", (None,))[0]
    if hasattr(native_model, "hyvideo_state"):
        entry["state"] = native_model.hyvideo_state()
    return entry


def interrupted_run(runner, prompt: dict) -> dict:
    """Press Cancel (ComfyUI's interrupt flag) at native KSampler's second step."""
    host = runner.host

    def cancel_at_step_two(node, value, total, preview):
        if node == "b" and value >= 2:
            host.interrupt()
    host.on_progress = cancel_at_step_two
    try:
        result = runner.run(prompt)
    finally:
        host.on_progress = None
    steps = [value for node, value, *_ in result.progress if node == "b"]
    return {"status": result.status, "error": result.error, "steps_seen": steps}


def write_case_models(models: Path) -> None:
    """The tiny model files the cases load, under models/<kind>/ (run by the test, in its Python:
    the tiny text towers are built with the text tests' helpers)."""
    names = set().union(*(file_inputs(prompt) for prompt, _ in cases().values())) - {"tiny_dit.safetensors"}
    write_models(models, names)
    write_dit(models / "diffusion_models" / "tiny_dit.safetensors")


def main(root: Path, report_path: Path) -> None:
    runner = comfyui_runner(os.environ["COMFYUI_PATH"], root, {"KeepLatent": KeepLatent})
    prompts = cases()
    report = {name: report_case(runner.run(with_sinks(prompt, pairs)), pairs)
              for name, (prompt, pairs) in prompts.items()}
    plain, pairs = prompts["plain"]
    report["interrupted"] = interrupted_run(runner, with_sinks({**plain, "b": ksampler(["n1", 0], 4, 21)}, pairs))
    report_path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
