"""Our DiT as ComfyUI's native MODEL, and ComfyUI's memory manager managing it, in a real ComfyUI.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/venv/bin/python pytest tests/test_comfyui_native.py

- native KSampler (euler, simple) on HunyuanVideo To Native MODEL gives our sampler's latent for the
  same seed, steps, shift and guidance (fp32 tiny model, 1e-4): plain, fp8 + block swap, with a
  LoRA, with TeaCache; SamplerCustomAdvanced + ModelSamplingSD3 + BasicScheduler too. Steps divide
  1000, so ComfyUI's simple-scheduler sigmas (ModelSamplingDiscreteFlow's 1000-entry table) are
  our schedule's, which is checked first.
- ComfyUI's manager knows our DiT (its current_loaded_models), evicts it (free_memory, the routine
  a native model's load runs; partial eviction swaps blocks out) and POST /free releases it.
- No assignment to a comfy.* attribute is left in nodes/ (the old monkey-patch is gone).

A test-only custom node pack (PROBES) reports latent differences, sigmas and the manager's state.
"""
from __future__ import annotations

import ast
import asyncio
import json
import time
from pathlib import Path

import pytest

import comfyui_server
from comfyui_server import COMFYUI_PATH, http, log_tail, running_comfyui
from native_prompts import (block_swap, ksampler, loader, lora_select, native, ours, sampler_custom_advanced,
                            teacache, text_nodes)

ROOT = Path(__file__).resolve().parents[1]
if hasattr(comfyui_server, "unless_present"):
    NEEDS_COMFYUI = comfyui_server.unless_present(comfyui_server.host_missing())
else:
    NEEDS_COMFYUI = [pytest.mark.comfyui,
                     pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to run")]
RUN_TIMEOUT = 600
TOLERANCE = 1e-4

# Test-only nodes, loaded by ComfyUI as a second custom-node file: they read ComfyUI's own state.
PROBES = '''
import json
import torch
import comfy.model_management as mm
import comfy.model_patcher


def _ours(model):
    return model if hasattr(model, "hyvideo_state") else None


def _accounting(model):
    """ComfyUI's list of loaded models; `mine`: the entry of the MODEL's DiT (its patcher or a clone)."""
    rows = []
    for lm in mm.current_loaded_models:
        patcher = lm.model
        if patcher is None:
            continue
        rows.append({"patcher": type(patcher).__name__, "model": type(patcher.model).__name__,
                     "loaded": int(lm.model_loaded_memory()), "size": int(lm.model_memory()),
                     "device": str(lm.device), "mine": bool(patcher.is_clone(model))})
    return rows


class _Probe:
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "tests"

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")


class HyVideoProbeLatentDiff(_Probe):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("LATENT",), "b": ("LATENT",)}}

    def run(self, a, b):
        x, y = a["samples"].float(), b["samples"].float()
        report = {"shape_a": list(x.shape), "shape_b": list(y.shape), "abs_a": float(x.abs().max())}
        if x.shape == y.shape:
            report["max_abs"] = float((x - y).abs().max())
        return {"ui": {"text": [json.dumps(report)]}}


class HyVideoProbeSigmas(_Probe):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",)}}

    def run(self, sigmas):
        return {"ui": {"text": [json.dumps([float(s) for s in sigmas])]}}


class HyVideoProbePadConditioning:
    """The conditioning with 3 padding tokens and an attention_mask marking them, as ComfyUI's text
    encoders give for padded prompts (`kind`: int64 mask, or bool, which ComfyUI casts to floats)."""
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "run"
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "kind": (["int64", "bool"],)}}

    def run(self, conditioning, kind):
        out = []
        for cond, extras in conditioning:
            pad = torch.randn(cond.shape[0], 3, cond.shape[2], dtype=cond.dtype)
            mask = torch.cat([torch.ones(cond.shape[:2]), torch.zeros(cond.shape[0], 3)], dim=1)
            out.append([torch.cat([cond, pad], dim=1),
                        {**extras, "attention_mask": mask.long() if kind == "int64" else mask.bool()}])
        return (out,)


class HyVideoProbeMemory(_Probe):
    """Our DiT's placement (via the MODEL) and ComfyUI's accounting; `evict`: none, partial (the
    manager's model_unload asks our entry for half its bytes), full (free_memory for everything,
    keeping a native model just loaded through load_models_gpu)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "evict": (["none", "partial", "full"],)},
                "optional": {"after": ("LATENT",)}}

    def run(self, model, evict, after=None):
        report = {"before": _accounting(model), "ours_before": _ours(model).hyvideo_state()}
        device = mm.get_torch_device()
        if evict == "partial":
            entry = next(lm for lm in mm.current_loaded_models if lm.model is not None and lm.model.is_clone(model))
            report["freed_all"] = bool(entry.model_unload(memory_to_free=entry.model_loaded_memory() // 2))
        elif evict == "full":
            native = comfy.model_patcher.ModelPatcher(torch.nn.Linear(256, 256), device, mm.unet_offload_device())
            mm.load_models_gpu([native])
            keep = [lm for lm in mm.current_loaded_models if lm.model is native]
            report["unloaded"] = [type(lm.model.model).__name__ for lm in mm.free_memory(1e30, device, keep_loaded=keep)]
            report["native_kept"] = any(lm.model is native for lm in mm.current_loaded_models)
        report["after"] = _accounting(model)
        report["ours_after"] = _ours(model).hyvideo_state()
        return {"ui": {"text": [json.dumps(report)]}}


class HyVideoProbeComponents(_Probe):
    """ComfyUI's accounting of our text towers and VAE (their ComponentPatcher entries); `evict`
    full: free_memory for everything, keeping a native model just loaded."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"evict": (["none", "full"],)}, "optional": {"after": ("IMAGE",)}}

    def run(self, evict, after=None):
        def rows():
            return [{"what": lm.model.model.what, "loaded": int(lm.model_loaded_memory()),
                     "size": int(lm.model_memory()), "state": lm.model.component_state()["state"]}
                    for lm in mm.current_loaded_models
                    if lm.model is not None and type(lm.model).__name__ == "ComponentPatcher"]
        report = {"before": rows()}
        if evict == "full":
            device = mm.get_torch_device()
            listed = [lm.model for lm in mm.current_loaded_models if type(lm.model).__name__ == "ComponentPatcher"]
            native = comfy.model_patcher.ModelPatcher(torch.nn.Linear(256, 256), device, mm.unet_offload_device())
            mm.load_models_gpu([native])
            keep = [lm for lm in mm.current_loaded_models if lm.model is native]
            mm.free_memory(1e30, device, keep_loaded=keep)
            report["states_after"] = [p.component_state()["state"] for p in listed]
        report["after"] = rows()
        return {"ui": {"text": [json.dumps(report)]}}


NODE_CLASS_MAPPINGS = {"HyVideoProbeLatentDiff": HyVideoProbeLatentDiff, "HyVideoProbeSigmas": HyVideoProbeSigmas,
                       "HyVideoProbeMemory": HyVideoProbeMemory, "HyVideoProbePadConditioning": HyVideoProbePadConditioning,
                       "HyVideoProbeComponents": HyVideoProbeComponents}
'''


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    with running_comfyui(tmp_path_factory.mktemp("comfyui_native"), {"hyvideo_native_probes.py": PROBES}) as server:
        yield server


async def _run(server, prompt: dict) -> dict:
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.post(server["url"] + "/prompt", json={"prompt": prompt}) as r:
            queued = await r.json()
            assert r.status == 200, f"prompt refused: {json.dumps(queued, indent=1)[:3000]}"
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            async with session.get(f"{server['url']}/history/{queued['prompt_id']}") as r:
                entry = (await r.json()).get(queued["prompt_id"], {})
            if entry.get("status", {}).get("completed") is not None:
                return entry
            await asyncio.sleep(0.2)
    raise AssertionError(f"prompt did not finish within {RUN_TIMEOUT} s")


def run(server, prompt: dict) -> dict:
    """Run a prompt; returns {node id: [decoded ui text...]} of every node that reported text."""
    entry = asyncio.run(_run(server, prompt))
    assert entry["status"]["status_str"] == "success", (
        f"{json.dumps(entry['status'].get('messages', [])[-2:], indent=1)[:4000]}\n{log_tail(server)}")
    return {node: ui.get("text", []) for node, ui in entry["outputs"].items()}


def probe(texts: dict, node: str):
    return json.loads(texts[node][0])


def diff(a, b) -> dict:
    return {"class_type": "HyVideoProbeLatentDiff", "inputs": {"a": a, "b": b}}


# -- the tests ----------------------------------------------------------------------------------
def comfy_attribute_assignments(source: str) -> list[int]:
    """Lines that assign to (or setattr/delattr on) a ComfyUI module's attribute, also through a
    name bound to one (`mm = comfy.model_management`, `self._mm = comfy.model_management`)."""
    tree = ast.parse(source)
    aliases = {"comfy", "folder_paths", "server", "comfy_extras", "comfy_api", "execution", "nodes"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update(a.asname for a in node.names if a.asname and a.name.split(".")[0] in aliases)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in aliases:
            aliases.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Assign) and _root_name(node.value) in aliases:
            aliases.update(_bound_name(t) for t in node.targets)
    lines = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        lines += [node.lineno for t in targets if isinstance(t, ast.Attribute) and _root_name(t.value) in aliases
                  and _bound_name(t) not in aliases]
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("setattr", "delattr") and node.args \
                and _root_name(node.args[0]) in aliases:
            lines.append(node.lineno)
    return sorted(lines)


def _root_name(node) -> str | None:
    """`a` for `a.b.c`, `self._mm` for `self._mm.x` (an attribute of self counts as a name)."""
    while isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return node.attr
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_name(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def test_nothing_in_nodes_assigns_to_a_comfy_attribute():
    """No monkey-patching of ComfyUI is left (the old `_follow_model_unloads` chained onto
    comfy.model_management.unload_all_models)."""
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / "nodes").rglob("*.py"))
                 for line in comfy_attribute_assignments(path.read_text())]
    assert offenders == []
    assert not any("unload_all_models" in p.read_text() for p in (ROOT / "nodes").rglob("*.py"))


def test_the_check_finds_monkey_patches():
    old_host = ("import comfy.model_management\nclass H:\n    def __init__(self):\n"
                "        self._mm = comfy.model_management\n        self._mm.unload_all_models = print\n")
    assert comfy_attribute_assignments(old_host) == [5]
    assert comfy_attribute_assignments("import comfy.model_management as mm\nmm.free_memory = print\n") == [2]
    assert comfy_attribute_assignments("import comfy.utils\ncomfy.utils.ProgressBar = object\n") == [2]
    assert comfy_attribute_assignments("import folder_paths\nsetattr(folder_paths, 'x', 1)\n") == [2]
    assert comfy_attribute_assignments("import comfy.utils\nclass A:\n    def f(self):\n"
                                       "        self.bar = comfy.utils.ProgressBar(3)\n        self.n = 1\n") == []


def needs_comfyui(test):
    for mark in NEEDS_COMFYUI:
        test = mark(test)
    return test


@needs_comfyui
@pytest.mark.parametrize("steps", [4, 5, 10])
def test_simple_scheduler_sigmas_are_our_schedule(comfy, steps):
    """ComfyUI's simple scheduler on the native MODEL (BasicScheduler) equals flow_sigmas when the
    steps divide 1000; ModelSamplingSD3 on top sets the same shift."""
    import torch
    from hyvideo_core.sampling import flow_sigmas
    prompt = {"m1": loader(), "n1": native(["m1", 0], shift=7.0),
              "n2": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["n1", 0], "shift": 3.0}},
              "s1": {"class_type": "BasicScheduler", "inputs": {"model": ["n1", 0], "scheduler": "simple",
                                                               "steps": steps, "denoise": 1.0}},
              "s2": {"class_type": "BasicScheduler", "inputs": {"model": ["n2", 0], "scheduler": "simple",
                                                               "steps": steps, "denoise": 1.0}},
              "p1": {"class_type": "HyVideoProbeSigmas", "inputs": {"sigmas": ["s1", 0]}},
              "p2": {"class_type": "HyVideoProbeSigmas", "inputs": {"sigmas": ["s2", 0]}}}
    texts = run(comfy, prompt)
    for node, shift in (("p1", 7.0), ("p2", 3.0)):
        got = torch.tensor(probe(texts, node))
        assert torch.allclose(got, flow_sigmas(steps, shift), atol=1e-6), (node, got)


@needs_comfyui
def test_native_ksampler_equals_our_sampler(comfy):
    steps, seed = 4, 3
    prompt = {**text_nodes(), "m1": loader(), "n1": native(["m1", 0]),
              "a": ours(["m1", 0], steps, seed), "b": ksampler(["n1", 0], steps, seed),
              "c": ksampler(["n1", 0], steps, seed + 1), "g": {"class_type": "FluxGuidance",
                                                              "inputs": {"conditioning": ["t3", 0], "guidance": 3.5}},
              "d": ours(["m1", 0], steps, seed, guidance=3.5), "e": ksampler(["n1", 0], steps, seed, ("g", 0)),
              "p1": diff(["a", 0], ["b", 0]), "p2": diff(["a", 0], ["c", 0]), "p3": diff(["d", 0], ["e", 0]),
              "p4": diff(["b", 0], ["e", 0])}
    for kind in ("int64", "bool"):   # padded native conditioning with an attention_mask: the same latent
        prompt[f"pad_{kind}"] = {"class_type": "HyVideoProbePadConditioning",
                                 "inputs": {"conditioning": ["t3", 0], "kind": kind}}
        prompt[f"k_{kind}"] = ksampler(["n1", 0], steps, seed, (f"pad_{kind}", 0))
        prompt[f"p_{kind}"] = diff(["a", 0], [f"k_{kind}", 0])
    texts = run(comfy, prompt)
    for kind in ("int64", "bool"):
        assert probe(texts, f"p_{kind}")["max_abs"] < TOLERANCE, (kind, probe(texts, f"p_{kind}"))
    same, other_seed = probe(texts, "p1"), probe(texts, "p2")
    assert same["shape_a"] == same["shape_b"] == [1, 16, 2, 8, 8]
    assert same["max_abs"] < TOLERANCE and same["abs_a"] > 0.1, same
    assert other_seed["max_abs"] > 0.1    # the comparison can fail
    assert probe(texts, "p3")["max_abs"] < TOLERANCE           # FluxGuidance = our embedded_guidance
    assert probe(texts, "p4")["max_abs"] > 1e-3                # and guidance does change the result


@needs_comfyui
def test_sampler_custom_advanced_with_model_sampling_sd3_equals_our_sampler(comfy):
    steps, seed, shift = 5, 11, 9.0
    prompt = {**text_nodes(), "m1": loader(), "n1": native(["m1", 0], shift=7.0),
              **sampler_custom_advanced(steps, seed, shift),
              "a": ours(["m1", 0], steps, seed, shift=shift), "p1": diff(["a", 0], ["x1", 0])}
    texts = run(comfy, prompt)
    assert probe(texts, "p1")["max_abs"] < TOLERANCE, probe(texts, "p1")


@needs_comfyui
def test_fp8_and_block_swap_stay_in_force_under_the_native_sampler(comfy):
    steps, seed = 4, 5
    prompt = {**text_nodes(), "w1": block_swap(), "m1": loader("fp8_e4m3fn", ["w1", 0]), "m2": loader(),
              "n1": native(["m1", 0]), "n2": native(["m2", 0]),
              "a": ours(["m1", 0], steps, seed), "b": ksampler(["n1", 0], steps, seed),
              "c": ksampler(["n2", 0], steps, seed),
              "p1": diff(["a", 0], ["b", 0]), "p2": diff(["b", 0], ["c", 0]),
              "q1": {"class_type": "HyVideoProbeMemory", "inputs": {"model": ["n1", 0], "evict": "none",
                                                                    "after": ["b", 0]}}}
    texts = run(comfy, prompt)
    assert probe(texts, "p1")["max_abs"] < TOLERANCE, probe(texts, "p1")
    assert probe(texts, "p2")["max_abs"] > 1e-4          # fp8 storage was really used by the native run
    state = probe(texts, "q1")["ours_after"]
    assert state["state"] == "swapped" and state["swapped"] == [1, 1], state
    assert 0 < state["loaded_bytes"] < state["total_bytes"]


@needs_comfyui
def test_lora_selection_stays_in_force_under_the_native_sampler(comfy):
    steps, seed = 4, 7
    prompt = {**text_nodes(), "m1": loader(), "l1": lora_select(["m1", 0]), "n1": native(["l1", 0]),
              "n0": native(["m1", 0]),
              "a": ours(["l1", 0], steps, seed), "b": ksampler(["n1", 0], steps, seed),
              "c": ksampler(["n0", 0], steps, seed), "d": ours(["m1", 0], steps, seed),
              "p1": diff(["a", 0], ["b", 0]), "p2": diff(["b", 0], ["c", 0]), "p3": diff(["c", 0], ["d", 0])}
    texts = run(comfy, prompt)
    assert probe(texts, "p1")["max_abs"] < TOLERANCE, probe(texts, "p1")
    assert probe(texts, "p2")["max_abs"] > 1e-3           # the LoRA changes the native result
    assert probe(texts, "p3")["max_abs"] < TOLERANCE       # and is taken off again for a branch without it


@needs_comfyui
def test_teacache_stays_in_force_under_the_native_sampler(comfy):
    steps, seed = 5, 9
    prompt = {**text_nodes(), "m1": loader(), "c1": teacache(1.0),
              "n1": native(["m1", 0], cache=["c1", 0]), "n0": native(["m1", 0]),
              "a": ours(["m1", 0], steps, seed, cache=["c1", 0]), "b": ksampler(["n1", 0], steps, seed),
              "c": ksampler(["n0", 0], steps, seed), "p1": diff(["a", 0], ["b", 0]), "p2": diff(["b", 0], ["c", 0])}
    texts = run(comfy, prompt)
    assert any("teacache: skipped" in line and "skipped 0 " not in line for line in texts["a"]), texts["a"]
    assert probe(texts, "p1")["max_abs"] < TOLERANCE, probe(texts, "p1")
    assert probe(texts, "p2")["max_abs"] > 1e-3           # skipped steps: the cache really ran natively


@needs_comfyui
def test_loading_our_dit_registers_it_with_the_manager(comfy):
    """The loader hands a freshly loaded DiT to ComfyUI's manager where it stands (resident here)."""
    texts = run(comfy, {"m9": loader("fp16"), "n9": native(["m9", 0]),
                        "q1": {"class_type": "HyVideoProbeMemory", "inputs": {"model": ["n9", 0], "evict": "none"}}})
    report = probe(texts, "q1")
    rows = [r for r in report["before"] if r["mine"]]
    assert len(rows) == 1 and rows[0]["patcher"] == "HyVideoPatcher", report["before"]
    assert rows[0]["size"] == report["ours_before"]["total_bytes"] > 0
    assert rows[0]["loaded"] == report["ours_before"]["loaded_bytes"] == rows[0]["size"]
    assert report["ours_before"]["state"] == "resident"


def decoded(seed: int) -> dict:
    """Our text encoding, our sampler and our VAE decode: every component of ours runs once."""
    return {**text_nodes(), "m5": loader(), "s5": ours(["m5", 0], 2, seed),
            "v5": {"class_type": "HyVideoVAELoader", "inputs": {"vae_name": "hunyuan_video_vae_bf16.safetensors",
                                                                "precision": "fp32"}},
            "d5": {"class_type": "HyVideoVAEDecode",
                   "inputs": {"vae": ["v5", 0], "samples": ["s5", 0], "tiling": "off", "spatial_tile": 256,
                              "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 16}}}


@needs_comfyui
def test_comfyui_accounts_for_evicts_and_frees_our_text_towers_and_vae(comfy):
    """Issue 15: the text towers and the VAE are loaded through ComfyUI's manager (listed with their
    bytes, resident), its eviction releases them, and POST /free with unload_models too."""
    texts = run(comfy, {**decoded(31), "q5": {"class_type": "HyVideoProbeComponents",
                                               "inputs": {"evict": "full", "after": ["d5", 0]}}})
    report = probe(texts, "q5")
    listed = {r["what"]: r for r in report["before"]}
    assert {"Llama text encoder", "CLIP text encoder", "VAE"} <= set(listed), report["before"]
    assert all(r["loaded"] == r["size"] > 0 and r["state"] == "resident" for r in listed.values()), listed
    assert report["after"] == [] and set(report["states_after"]) == {"home"}, report
    run(comfy, {**decoded(32), "q5": {"class_type": "HyVideoProbeComponents",
                                       "inputs": {"evict": "none", "after": ["d5", 0]}}})
    status, _ = asyncio.run(http(comfy, "POST", "/free", {"unload_models": True}))
    assert status == 200
    for _ in range(50):        # ComfyUI frees between prompts: the probe's prompt runs after it
        report = probe(run(comfy, {"q6": {"class_type": "HyVideoProbeComponents", "inputs": {"evict": "none"}}}),
                       "q6")
        if not report["before"]:
            break
        time.sleep(0.1)
    assert report["before"] == [], report


@needs_comfyui
def test_comfyui_accounts_for_evicts_and_frees_our_dit(comfy):
    """Loaded: our DiT is in ComfyUI's current_loaded_models with its bytes. The manager's eviction:
    asked for half its bytes it swaps blocks out and stays listed; free_memory (what loading a
    native model runs; on --cpu ComfyUI never evicts for a load, so the probe runs it for a native
    model it just loaded) releases it. Then POST /free with unload_models releases it too."""
    steps, seed = 4, 13
    base = {**text_nodes(), "m1": loader(), "n1": native(["m1", 0]), "b": ksampler(["n1", 0], steps, seed)}
    texts = run(comfy, {**base, "q1": {"class_type": "HyVideoProbeMemory",
                                       "inputs": {"model": ["n1", 0], "evict": "partial", "after": ["b", 0]}}})
    report = probe(texts, "q1")
    ours_rows = [r for r in report["before"] if r["mine"]]
    assert len(ours_rows) == 1 and ours_rows[0]["patcher"] == "HyVideoPatcher", report["before"]
    assert ours_rows[0]["model"] == "HyVideoNativeModel"
    assert ours_rows[0]["loaded"] == ours_rows[0]["size"] == report["ours_before"]["total_bytes"] > 0
    assert report["ours_before"]["state"] == "resident"
    assert report["freed_all"] is False and report["ours_after"]["state"] == "swapped"
    after = [r for r in report["after"] if r["mine"]][0]
    assert after["loaded"] == report["ours_after"]["loaded_bytes"] <= after["size"] // 2

    rerun = {**base, "b": ksampler(["n1", 0], steps, seed + 1)}   # a new seed: KSampler runs (and loads) again
    texts = run(comfy, {**rerun, "q1": {"class_type": "HyVideoProbeMemory",
                                        "inputs": {"model": ["n1", 0], "evict": "full", "after": ["b", 0]}}})
    report = probe(texts, "q1")
    assert report["ours_before"]["state"] == "resident"       # the native run placed it again
    assert "HyVideoNativeModel" in report["unloaded"] and report["native_kept"]
    assert report["ours_after"]["state"] == "home" and report["ours_after"]["loaded_bytes"] == 0
    assert not [r for r in report["after"] if r["mine"]]

    texts = run(comfy, {**base, "b": ksampler(["n1", 0], steps, seed + 2),
                        "q1": {"class_type": "HyVideoProbeMemory",
                               "inputs": {"model": ["n1", 0], "evict": "none", "after": ["b", 0]}}})
    assert [r["mine"] for r in probe(texts, "q1")["after"]].count(True) == 1   # sampled again: listed again
    status, _ = asyncio.run(http(comfy, "POST", "/free", {"unload_models": True}))
    assert status == 200
    time.sleep(1.5)    # ComfyUI's prompt worker unloads between prompts
    texts = run(comfy, {"m1": loader(), "n1": native(["m1", 0]),
                        "q1": {"class_type": "HyVideoProbeMemory", "inputs": {"model": ["n1", 0], "evict": "none"}}})
    report = probe(texts, "q1")
    assert report["ours_before"]["state"] == "home", report
    assert not [r for r in report["before"] if r["patcher"] == "HyVideoPatcher"], report["before"]  # none of ours

    # This pack's own sampler asks the host for room before it places the DiT: the DiT is handed
    # back to the manager there, so it is listed again with what the sampler placed.
    texts = run(comfy, {**text_nodes(), "m1": loader(), "n1": native(["m1", 0]), "a": ours(["m1", 0], steps, seed),
                        "q1": {"class_type": "HyVideoProbeMemory",
                               "inputs": {"model": ["n1", 0], "evict": "none", "after": ["a", 0]}}})
    report = probe(texts, "q1")
    mine = [r for r in report["before"] if r["mine"]]
    assert len(mine) == 1 and report["ours_before"]["state"] == "resident"
    assert mine[0]["loaded"] == mine[0]["size"] == report["ours_before"]["total_bytes"]


# -- the native workflows ---------------------------------------------------------------------------
NATIVE_WORKFLOWS = ("hunyuan_video_native_sampler", "hunyuan_video_native_context_windows")


def object_info_classes(info: dict) -> dict:
    """Stand-ins for every node ComfyUI lists (ours and native): INPUT_TYPES / RETURN_TYPES as the
    frontend reads them from /object_info, for the harness's UI -> API converter."""
    classes = {}
    for name, entry in info.items():
        spec = {section: {k: tuple(v) for k, v in entry["input"].get(section, {}).items()}
                for section in ("required", "optional")}
        classes[name] = type(name, (), {"INPUT_TYPES": classmethod(lambda cls, s=spec: s),
                                        "RETURN_TYPES": tuple(entry["output"])})
    return classes


@needs_comfyui
@pytest.mark.parametrize("name", NATIVE_WORKFLOWS)
def test_native_ui_workflow_is_its_api_twin_for_comfyui(comfy, name):
    from harness import load_json, prompt_differences, ui_to_api
    status, info = asyncio.run(http(comfy, "GET", "/object_info"))
    assert status == 200
    ui, api = load_json(ROOT / "workflows" / f"{name}.json"), load_json(ROOT / "workflows" / "api" / f"{name}.json")
    assert prompt_differences(api, ui_to_api(ui, object_info_classes(info))) == []
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, kind in ui["links"]:
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert nodes[origin]["outputs"][origin_slot]["type"] == kind == nodes[target]["inputs"][target_slot]["type"]
        assert nodes[origin]["order"] < nodes[target]["order"]
    assert {"HyVideoToNativeModel", "HyVideoEmbedsToConditioning"} <= {n["type"] for n in ui["nodes"]}


@needs_comfyui
def test_native_workflows_run_with_context_windows_in_use(comfy):
    from harness import SMALL_SETTINGS, load_json, with_inputs
    outputs = []
    for name, extra in (("hunyuan_video_native_sampler", {}),
                        ("hunyuan_video_native_context_windows", {"length": 25, "context_length": 4,
                                                                  "context_overlap": 1})):
        prompt = with_inputs(load_json(ROOT / "workflows" / "api" / f"{name}.json"), {**SMALL_SETTINGS, **extra})
        entry = asyncio.run(_run(comfy, prompt))
        assert entry["status"]["status_str"] == "success", f"{name}\n{log_tail(comfy)}"
        outputs += [item for ui in entry["outputs"].values() for key in ("videos", "images", "gifs")
                    for item in ui.get(key, [])]
    assert len(outputs) == 2 and all((comfy["output"] / o.get("subfolder", "") / o["filename"]).stat().st_size
                                     for o in outputs)
    assert "Using context windows 4 for 7 frames" in Path(comfy["log"]).read_text(errors="replace")
