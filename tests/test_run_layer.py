"""The run layer under the CLI and the nodes: everything refused before any model loads, the OOM
policy reaching node users, one budget and one "auto", node defaults equal to CLI defaults."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from hyvideo_core.cli import _parser, main
from hyvideo_core.demo import write_demo_models
from hyvideo_core.errors import OutOfMemoryError
from hyvideo_core.run import SwapRequest, plan_placement
from hyvideo_core.run.choices import DEFAULTS
from hyvideo_core.runtime.planner import GiB, PlanInputs


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_models(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def no_model_loads(monkeypatch):
    """Every model loader raises if it is called: a refused run must not load anything."""
    calls = []

    def refuse(name):
        def loader(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called")
        return loader
    import hyvideo_core.text.loader as text_loader
    import hyvideo_core.vae.loader as vae_loader
    import hyvideo_core.weights.loader as dit_loader
    monkeypatch.setattr(dit_loader, "load_transformer", refuse("load_transformer"))
    monkeypatch.setattr(vae_loader, "load_vae", refuse("load_vae"))
    monkeypatch.setattr(text_loader, "load_text_encoder", refuse("load_text_encoder"))
    return calls


def _files(demo, **replace) -> list[str]:
    paths = {"dit": demo.dit, "vae": demo.vae, "llm": demo.llm, "clip": demo.clip, **replace}
    return [arg for role, path in paths.items() for arg in (f"--{role}", str(path))]


def _read_bytes() -> int:
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("rchar")).split()[1])


def test_a_broken_vae_is_refused_in_seconds_with_no_weights_read(demo, tmp_path, no_model_loads, capsys):
    dit = tmp_path / "big_dit.safetensors"   # the demo DiT plus 48 MB of padding the check must not read
    from safetensors.torch import load_file, save_file
    save_file({**load_file(demo.dit), "padding": torch.zeros(12 * 2**20)}, dit)
    vae = next(Path(demo.vae).glob("*.safetensors")) if Path(demo.vae).is_dir() else Path(demo.vae)
    broken = tmp_path / "broken_vae.safetensors"
    broken.write_bytes(vae.read_bytes()[: vae.stat().st_size // 2])
    out = tmp_path / "out.mp4"
    main(["generate", *_files(demo), "-o", str(tmp_path / "warm-up.avi")])   # imports, outside the measurement
    capsys.readouterr()
    before, start = _read_bytes(), time.perf_counter()
    code = main(["generate", *_files(demo, dit=dit, vae=broken), "-o", str(out)])
    elapsed, read = time.perf_counter() - start, _read_bytes() - before
    err = capsys.readouterr().err
    assert code == 2 and "broken_vae.safetensors" in err and "--vae" in err
    assert elapsed < 3, elapsed
    assert read < dit.stat().st_size // 4, f"read {read} bytes of a {dit.stat().st_size}-byte DiT"
    assert no_model_loads == [] and not out.exists()


@pytest.mark.parametrize("output, found", [("out.avi", "avi"), ("blocked/out.mp4", "is a file")])
def test_a_bad_output_is_refused_before_anything_loads(demo, tmp_path, no_model_loads, capsys, output, found):
    (tmp_path / "blocked").write_text("a file where a folder should be")
    start = time.perf_counter()
    assert main(["generate", *_files(demo), "-o", str(tmp_path / output)]) == 2
    assert time.perf_counter() - start < 3
    assert found in capsys.readouterr().err and no_model_loads == []


def test_the_wrong_kind_of_file_is_named(demo, tmp_path, no_model_loads, capsys):
    assert main(["generate", *_files(demo, dit=demo.vae), "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "--dit" in err and Path(demo.vae).name in err and no_model_loads == []


def test_an_out_of_memory_in_sampling_reaches_a_node_user_as_the_planners_advice(tmp_path, monkeypatch):
    from node_graphs import t2v_prompt, tiny_runner
    from hyvideo_core.model.transformer import HunyuanVideoTransformer
    runner, _ = tiny_runner(tmp_path)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(HunyuanVideoTransformer, "forward", out_of_memory)
    result = runner.run(t2v_prompt())
    assert result.status == "error"
    assert result.error["exception_type"] == "OutOfMemoryError"
    message = result.error["exception_message"]
    assert "The planner predicts a peak of" in message and "during sampling" in message


def test_an_out_of_memory_in_sampling_reaches_a_cli_user_as_the_planners_advice(demo, tmp_path, monkeypatch, capsys):
    from hyvideo_core.model.transformer import HunyuanVideoTransformer

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(HunyuanVideoTransformer, "forward", out_of_memory)
    assert main(["generate", "--demo", "--steps", "1", "--frames", "5", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "The planner predicts a peak of" in capsys.readouterr().err


def test_one_encoding_of_auto_swap_and_of_a_budget():
    assert SwapRequest.parse("auto") == SwapRequest.counts(-1, 5) == SwapRequest.counts(None, None) == SwapRequest("auto")
    assert SwapRequest.parse("0,0") == SwapRequest.counts(0, 0) == SwapRequest("off")
    assert SwapRequest.parse("10,20") == SwapRequest.counts(10, 20) == SwapRequest("fixed", 10, 20)
    inputs = PlanInputs(width=960, height=544, frames=129)
    chosen = plan_placement(inputs, SwapRequest("auto"), 24 * GiB, torch.device("cuda"))
    assert chosen.plan.fits(24 * GiB) and chosen.swap is not None and "auto swap" in chosen.note
    roomy = plan_placement(inputs, SwapRequest("auto"), 200 * GiB, torch.device("cuda"))
    assert roomy.swap is None   # everything fits: the whole model stays resident
    with pytest.raises(OutOfMemoryError, match="nothing fits"):
        plan_placement(inputs, SwapRequest("auto"), 2 * GiB, torch.device("cuda"))
    on_cpu = plan_placement(inputs, SwapRequest("auto"), None, torch.device("cpu"))
    assert on_cpu.swap is None and "nothing moves" in on_cpu.note


def test_node_defaults_equal_cli_defaults():
    from harness import load_pack
    nodes = load_pack().NODE_CLASS_MAPPINGS
    sampler = {k: v[1].get("default") for k, v in nodes["HyVideoSampler"].INPUT_TYPES()["required"].items()
               if len(v) > 1}
    loader = {k: v[1].get("default") for k, v in nodes["HyVideoModelLoader"].INPUT_TYPES()["required"].items()}
    cli = vars(_parser().parse_args(["generate"]))
    pairs = {"width": "width", "height": "height", "frames": "frames", "steps": "steps", "shift": "shift",
             "embedded_guidance": "guidance", "true_cfg_scale": "cfg_scale", "seed": "seed", "solver": "solver"}
    for node_name, cli_name in pairs.items():
        assert sampler[node_name] == cli[cli_name] == getattr(DEFAULTS, node_name if node_name != "true_cfg_scale"
                                                               else "cfg_scale"), node_name
    assert loader["weight_format"] == cli["weight_format"] and loader["attention"] == cli["attention"]
    cache_nodes = {"HyVideoTeaCache": "teacache", "HyVideoFirstBlockCache": "first_block",
                   "HyVideoEasyCache": "easycache", "HyVideoMagCache": "magcache"}
    for node_id, name in cache_nodes.items():
        threshold = nodes[node_id].INPUT_TYPES()["required"]["threshold"][1]["default"]
        assert threshold == DEFAULTS.cache_thresholds[name]
        assert name in _parser().parse_args(["generate", "--cache", name]).cache


def test_node_lists_are_the_engines_lists():
    from harness import load_pack
    from hyvideo_core.run.choices import ATTENTION_BACKENDS, SOLVER_NAMES, WEIGHT_FORMATS
    nodes = load_pack().NODE_CLASS_MAPPINGS
    loader = nodes["HyVideoModelLoader"].INPUT_TYPES()["required"]
    assert tuple(loader["weight_format"][0]) == WEIGHT_FORMATS and tuple(loader["attention"][0]) == ATTENTION_BACKENDS
    assert tuple(nodes["HyVideoSampler"].INPUT_TYPES()["required"]["solver"][0]) == SOLVER_NAMES
