"""Loader nodes on every file layout users have (bf16, fp8, GGUF, Hugging Face text-encoder folders),
LoRAs on quantised models, the speed nodes and the memory plan node."""
from __future__ import annotations

import pytest
import torch

from harness import load_pack
from node_graphs import FP8, GGUF, LORA, SAMPLER, node, sampled, t2v_prompt, tiny_runner, ui_text
from tiny_models import write_text_encoder_folders


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_runner(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="module")
def base(setup):
    return sampled(setup[0].run(t2v_prompt()).expect_success())


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("model, weight_format, stored", [
    (GGUF, "auto", "gguf"),                  # quants stay quantised
    (FP8, "auto", "fp8_e4m3fn"),             # the file's fp8 bytes are kept
    ("hunyuan_video_t2v_720p_bf16.safetensors", "fp8_scaled", "fp8_scaled"),
    ("hunyuan_video_t2v_720p_bf16.safetensors", "fp8_e4m3fn_fast", "fp8_e4m3fn"),  # plain path off CUDA
])
def test_quantised_weights_load_and_sample_close_to_full_precision(setup, base, model, weight_format, stored):
    result = setup[0].run(t2v_prompt(model=model, weight_format=weight_format)).expect_success()
    assert stored in ui_text(result, "1")
    difference = relative_difference(sampled(result), base)
    assert 0 < difference < 0.1, difference   # quantised, so not equal, but the same model


def test_a_lora_on_gguf_uses_runtime_adapters_and_retunes_without_reloading(setup):
    runner = setup[0]
    plain = sampled(runner.run(t2v_prompt(model=GGUF)).expect_success())
    one = runner.run(t2v_prompt(model=GGUF, loras=[(LORA, 1.0)])).expect_success()
    assert "runtime adapters" in ui_text(one, SAMPLER) and "0 layers merged" in ui_text(one, SAMPLER)
    half = runner.run(t2v_prompt(model=GGUF, loras=[(LORA, 0.5)])).expect_success()
    assert "1" not in half.executed
    a, b = sampled(one), sampled(half)
    assert not torch.equal(a, plain) and not torch.equal(a, b)
    # LoRA deltas are small here, so the output moves about linearly with the strength.
    assert relative_difference(b, plain) < relative_difference(a, plain)


def test_hugging_face_text_encoder_folders_are_offered_and_load(setup):
    runner, folders = setup
    write_text_encoder_folders(folders["models"] / "text_encoders" / "hunyuan")
    choices = load_pack().nodes.loaders.text_encoder_choices()
    assert "hunyuan/text_encoder/" in choices and "hunyuan/text_encoder_2/" in choices
    assert not [c for c in choices if c.startswith("hunyuan/") and not c.endswith("/")]  # no files inside them
    prompt = t2v_prompt()
    prompt["2"]["inputs"].update(llm_name="hunyuan/text_encoder/", clip_name="hunyuan/text_encoder_2/")
    result = runner.run(prompt).expect_success()
    assert "text_encoder" in ui_text(result, "2")


def test_first_block_cache_and_teacache_skip_steps_when_allowed(setup):
    runner = setup[0]
    exact = sampled(runner.run(t2v_prompt(steps=6)).expect_success())
    never = runner.run(t2v_prompt(steps=6, cache={"threshold": 0.0})).expect_success()
    assert torch.equal(sampled(never), exact) and "skipped 0 of 6" in ui_text(never, SAMPLER)
    for kind in ("HyVideoTeaCache", "HyVideoFirstBlockCache"):
        skipping = runner.run(t2v_prompt(steps=6, cache={"kind": kind, "threshold": 1.0})).expect_success()
        text = ui_text(skipping, SAMPLER)
        skipped = int(text.split("skipped ")[1].split(" ")[0])
        assert 0 < skipped <= 4, text   # never the first or last step
        assert not torch.equal(sampled(skipping), exact)


def test_the_memory_plan_node_reports_the_planner(setup):
    runner = setup[0]
    settings = dict(width=1280, height=720, frames=129, weight_format="fp8_e4m3fn", attention="sdpa",
                    double_blocks_to_swap=-1, single_blocks_to_swap=-1, true_cfg_scale=1.0, vae_tiling="auto",
                    vram_budget_gb=24.0)
    result = runner.run({"1": node("HyVideoMemoryPlan", **settings)}).expect_success()
    text = ui_text(result, "1")
    assert text.startswith("fits in 24.0 GiB") and "auto swap:" in text and "block swap slots" in text
    tight = runner.run({"1": node("HyVideoMemoryPlan", **{**settings, "vram_budget_gb": 4.0})}).expect_success()
    assert "does NOT fit" in ui_text(tight, "1") and "at least" in ui_text(tight, "1")
    # With a model connected its real tensors are counted (2+2 tiny blocks, not the 13B).
    prompt = t2v_prompt()
    prompt["9"] = node("HyVideoMemoryPlan", **{**settings, "double_blocks_to_swap": 0, "single_blocks_to_swap": 0},
                       model=["1", 0])
    tiny = ui_text(runner.run(prompt).expect_success(), "9")
    assert "DiT weights (resident)" in tiny and "0.00 GiB" in tiny.split("DiT weights (resident)")[1].split("\n")[0]


def test_compiled_blocks_give_the_same_video(setup, base):
    prompt = t2v_prompt()
    prompt["40"] = node("HyVideoTorchCompile", backend="eager", mode="default", fullgraph=False, dynamic=False)
    prompt["1"]["inputs"]["compile"] = ["40", 0]
    result = setup[0].run(prompt).expect_success()
    assert torch.equal(sampled(result), base)
    loaded = setup[0]._objects[("1", "HyVideoModelLoader")].cached[1]
    assert all(hasattr(block, "_compiled_call_impl") and block._compiled_call_impl is not None
               for block in loaded.transformer.double_blocks)


def test_compile_settings_reach_torch_compile(setup):
    speed = load_pack().nodes.speed
    settings, = speed.HyVideoTorchCompile().settings("inductor", "max-autotune", True, False)
    assert settings.options() == {"backend": "inductor", "fullgraph": True, "dynamic": False, "mode": "max-autotune"}
    assert "mode" not in speed.HyVideoTorchCompile().settings("eager", "default", False, False)[0].options()


def test_text_encoding_on_a_gpu_moves_the_transformer_off_when_the_tower_would_not_fit(monkeypatch):
    from types import SimpleNamespace
    pack = load_pack()
    host, text = pack.nodes.host.host, pack.nodes.text
    encoder = SimpleNamespace(device=torch.device("cuda"), offload_device=torch.device("cpu"))
    monkeypatch.setattr(text, "encode_device_bytes", lambda enc, template: 3 * 2**30)
    unloads = []
    monkeypatch.setattr(host, "unload_all", lambda: unloads.append(1))
    monkeypatch.setattr(host, "device_memory", lambda device=None: (100 * 2**30, 200 * 2**30))
    assert text.make_room_for(encoder) == [] and not unloads
    monkeypatch.setattr(host, "device_memory", lambda device=None: (2**30, 24 * 2**30))
    note, = text.make_room_for(encoder)
    assert unloads == [1] and "make room for the text encoder" in note and "3.0 GiB needed" in note
    encoder.device = torch.device("cpu")   # towers on the CPU never touch the GPU
    assert text.make_room_for(encoder) == [] and unloads == [1]


def test_the_sampler_asks_the_host_for_the_room_the_planner_predicts(setup, monkeypatch):
    host = load_pack().nodes.host.host
    asked, placed = [], []
    monkeypatch.setattr(host, "free_device_memory", lambda nbytes, device: asked.append((nbytes, str(device))))
    monkeypatch.setattr(host, "place_components",
                        lambda placements, nbytes, device: placed.append(([p.what for p in placements], str(device))))
    setup[0].run(t2v_prompt(seed=11)).expect_success()
    (fixed, device), = asked                                    # the sampler's room
    assert device == "cpu" and 2**20 < fixed < 2**31          # the tiny model's plan, reserve included
    assert placed[-1] == (["VAE"], "cpu")                      # the decode hands the VAE to the host first
    asked.clear()
    setup[0].run(t2v_prompt(seed=12, swap={"vram_budget_gb": 10.0})).expect_success()
    assert asked[0][0] == fixed                                 # auto swap: nothing to swap, the same plan
