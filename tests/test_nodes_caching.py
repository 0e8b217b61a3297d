"""Node outputs cached like ComfyUI caches them: a LoRA strength or a sampler widget re-runs only the
nodes downstream, the loader never reloads, and the shared cached model always carries exactly
the LoRAs of the branch being sampled."""
from __future__ import annotations

import copy

import pytest
import torch

import hyvideo_core
from harness import load_pack
from node_graphs import LORA, LORA_2, SAMPLER, node, sampled, t2v_prompt, tiny_runner, ui_text


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture
def runner(tmp_path, cache_dir):
    return tiny_runner(tmp_path, cache_dir)[0]


@pytest.fixture
def loads(monkeypatch):
    """Every DiT file the loader really read."""
    calls = []
    original = hyvideo_core.load_transformer

    def counting(path, **kwargs):
        calls.append(path)
        return original(path, **kwargs)

    monkeypatch.setattr(hyvideo_core, "load_transformer", counting)
    return calls


def test_a_lora_strength_change_reruns_downstream_only_and_never_reloads(runner, loads):
    first = runner.run(t2v_prompt(loras=[(LORA, 1.0)])).expect_success()
    second = runner.run(t2v_prompt(loras=[(LORA, 0.5)])).expect_success()
    assert second.executed == ["20", SAMPLER, "6", "7"]
    assert sorted(second.cached) == ["1", "2", "3", "5"]
    assert len(loads) == 1
    assert not torch.equal(sampled(first), sampled(second))
    back = runner.run(t2v_prompt(loras=[(LORA, 1.0)])).expect_success()
    assert torch.equal(sampled(back), sampled(first))  # re-weighted from the saved base bytes, exactly
    assert "x0.5" in ui_text(second, SAMPLER)


def test_removing_a_lora_gives_the_base_model_back_exactly(runner, loads):
    base = sampled(runner.run(t2v_prompt()).expect_success())
    with_lora = sampled(runner.run(t2v_prompt(loras=[(LORA, 1.0)])).expect_success())
    again = runner.run(t2v_prompt()).expect_success()
    assert not torch.equal(base, with_lora)
    assert torch.equal(sampled(again), base)
    assert "removed" in ui_text(again, SAMPLER) and len(loads) == 1


def test_chained_loras_and_block_strengths(runner):
    base = sampled(runner.run(t2v_prompt()).expect_success())
    one = sampled(runner.run(t2v_prompt(loras=[(LORA, 1.0)])).expect_success())
    two = sampled(runner.run(t2v_prompt(loras=[(LORA, 1.0), (LORA_2, 1.0)])).expect_success())
    assert not torch.equal(one, two)
    # Block strength 0 everywhere: nothing is applied at all, so the base model comes out.
    off = runner.run(t2v_prompt(loras=[(LORA, 1.0, "double:*=0 single:*=0")])).expect_success()
    assert torch.equal(sampled(off), base)
    only_first = sampled(runner.run(t2v_prompt(loras=[(LORA, 1.0, "double:0=1 default=0")])).expect_success())
    assert not torch.equal(only_first, base) and not torch.equal(only_first, one)


def test_two_branches_with_different_loras_on_one_model(runner, tmp_path, cache_dir, loads):
    prompt = t2v_prompt(loras=[(LORA, 1.0)])
    prompt["40"] = node("HyVideoLoraSelect", model=["1", 0], lora_name=LORA_2, strength=0.7, blocks="")
    prompt["41"] = copy.deepcopy(prompt[SAMPLER])
    prompt["41"]["inputs"]["model"] = ["40", 0]
    prompt["42"] = node("HyVideoVAEDecode", **{**prompt["6"]["inputs"], "samples": ["41", 0]})
    prompt["43"] = node("HyVideoSaveVideo", **{**prompt["7"]["inputs"], "images": ["42", 0]})
    prompt["44"] = copy.deepcopy(prompt[SAMPLER])       # a third branch without any LoRA
    prompt["44"]["inputs"]["model"] = ["1", 0]
    prompt["45"] = node("HyVideoVAEDecode", **{**prompt["6"]["inputs"], "samples": ["44", 0]})
    prompt["46"] = node("HyVideoSaveVideo", **{**prompt["7"]["inputs"], "images": ["45", 0]})
    both = runner.run(prompt).expect_success()
    assert len(loads) == 1
    alone = tiny_runner(tmp_path / "alone", cache_dir)[0]
    assert torch.equal(sampled(both), sampled(alone.run(t2v_prompt(loras=[(LORA, 1.0)])).expect_success()))
    assert torch.equal(sampled(both, "41"), sampled(alone.run(t2v_prompt(loras=[(LORA_2, 0.7)])).expect_success()))
    assert torch.equal(sampled(both, "44"), sampled(alone.run(t2v_prompt()).expect_success()))


def test_a_sampler_widget_change_reruns_the_sampler_only(runner, loads):
    first = runner.run(t2v_prompt(seed=1)).expect_success()
    second = runner.run(t2v_prompt(seed=2)).expect_success()
    assert second.executed == [SAMPLER, "6", "7"] and len(loads) == 1
    assert not torch.equal(sampled(first), sampled(second))


def test_block_swap_changes_reuse_the_loaded_weights(runner, loads):
    first = runner.run(t2v_prompt(swap={"double_blocks_to_swap": 0, "single_blocks_to_swap": 0})).expect_success()
    second = runner.run(t2v_prompt(swap={"double_blocks_to_swap": 1, "single_blocks_to_swap": 2})).expect_success()
    assert "1" in second.executed and len(loads) == 1   # the loader ran again but read nothing
    assert "1 double + 2 single blocks offloaded" in ui_text(second, SAMPLER)
    assert torch.equal(sampled(first), sampled(second))  # placement never changes the numbers


def test_unloading_models_then_sampling_again(runner, loads):
    first = runner.run(t2v_prompt(seed=5)).expect_success()
    host = load_pack().nodes.host.host
    loaded = runner._objects[("1", "HyVideoModelLoader")].cached[1]
    assert loaded.placement.state == "resident"
    host.unload_all()                   # what ComfyUI's "Unload models" / POST /free triggers
    assert loaded.placement.state == "home"
    again = runner.run(t2v_prompt(seed=6)).expect_success()
    assert loaded.placement.state == "resident" and len(loads) == 1
    assert again.executed == [SAMPLER, "6", "7"]
    assert not torch.equal(sampled(first), sampled(again))
