"""Bad input at the node level: ComfyUI-shaped validation errors naming the folders searched, engine
errors as clear node errors, snapped sizes reported, and interrupts that leave no partial video."""
from __future__ import annotations

import shutil

import pytest

from harness import load_pack
from node_graphs import CLIP, DIT, LORA, SAMPLER, VAE, node, sampled, t2v_prompt, tiny_runner, ui_text


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture
def setup(tmp_path, cache_dir):
    return tiny_runner(tmp_path, cache_dir)


@pytest.fixture
def host():
    return load_pack().nodes.host.host


def errors_of(result, node_id: str) -> list[dict]:
    return result.node_errors[node_id]["errors"]


def test_a_missing_model_file_is_refused_naming_the_folders_searched(setup):
    runner, folders = setup
    prompt = t2v_prompt()
    prompt["1"]["inputs"]["model_name"] = "hunyuan_video_t2v_720p_fp8.safetensors"
    result = runner.run(prompt)
    assert result.status == "invalid"
    error = errors_of(result, "1")[0]
    assert error["type"] == "custom_validation_failed"
    assert "hunyuan_video_t2v_720p_fp8.safetensors" in error["details"]
    assert str(folders["models"] / "diffusion_models") in error["details"]
    assert str(folders["models"] / "unet") in error["details"] and DIT in error["details"]  # and what is there


def test_a_file_of_another_model_is_a_clear_node_error(setup):
    runner, folders = setup
    shutil.copyfile(folders["models"] / "vae" / VAE, folders["models"] / "diffusion_models" / "vae_by_mistake.safetensors")
    result = runner.run(t2v_prompt(model="vae_by_mistake.safetensors"))
    assert result.status == "error" and result.error["node_id"] == "1"
    assert result.error["exception_type"] in ("CheckpointError", "UnknownFormatError")
    assert "vae_by_mistake.safetensors" in result.error["exception_message"]


def test_towers_in_the_wrong_slots_are_a_clear_error(setup):
    runner, _ = setup
    prompt = t2v_prompt()
    prompt["2"]["inputs"]["llm_name"] = CLIP
    result = runner.run(prompt)
    assert result.status == "error" and result.error["node_id"] == "2"
    assert result.error["exception_type"].endswith("Error") and CLIP in result.error["exception_message"]


def test_a_missing_tokenizer_names_where_it_was_looked_for(setup, monkeypatch):
    runner, folders = setup
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    shutil.rmtree(folders["models"] / "text_encoders" / "llama_tokenizer")
    result = runner.run(t2v_prompt())
    assert result.status == "error" and result.error["node_id"] == "2"
    message = result.error["exception_message"]
    assert "llama_tokenizer" in message and str(folders["models"] / "text_encoders") in message


def test_invalid_sizes_are_snapped_and_reported(setup):
    runner, _ = setup
    result = runner.run(t2v_prompt(width=40, height=30, frames=6)).expect_success()
    assert list(sampled(result).shape) == [1, 16, 2, 4, 6]     # 48x32, 5 frames
    text = ui_text(result, SAMPLER)
    assert "40x30 rounded up to 48x32" in text and "frames 6 rounded down to 5" in text
    assert text.startswith("48x32x5")


def test_bad_block_strengths_and_missing_inputs_fail_validation(setup):
    runner, folders = setup
    result = runner.run(t2v_prompt(loras=[(LORA, 1.0, "double:0-3=half")]))
    assert result.status == "invalid" and "double:0-3=half" in errors_of(result, "20")[0]["details"]
    prompt = {"1": node("HyVideoLoadImage", image="nowhere.png"),
              "2": node("HyVideoSaveVideo", images=["1", 0], filename_prefix="x", format="gif", fps=8.0, crf=0)}
    result = runner.run(prompt)
    assert result.status == "invalid"
    assert "nowhere.png" in errors_of(result, "1")[0]["details"]
    assert str(folders["input"]) in errors_of(result, "1")[0]["details"]


def test_true_cfg_without_a_negative_prompt_says_what_to_do(setup):
    runner, _ = setup
    result = runner.run(t2v_prompt(true_cfg_scale=4.0))
    assert result.status == "error" and result.error["node_id"] == SAMPLER
    assert "negative" in result.error["exception_message"]
    prompt = t2v_prompt(true_cfg_scale=4.0)
    prompt["3"]["inputs"]["negative_prompt"] = "blurry, low quality"
    assert runner.run(prompt).ok


def test_keyframes_without_the_keyframe_lora_name_it(setup):
    runner, _ = setup
    prompt = t2v_prompt()
    prompt["10"] = node("HyVideoLoadImage", image="first.png")
    prompt["11"] = node("HyVideoKeyframeEncode", vae=["5", 0], width=32, height=32, frames=5, encode_seed=0,
                        tiling="off", first_image=["10", 0])
    prompt[SAMPLER]["inputs"]["keyframes"] = ["11", 0]
    result = runner.run(prompt)
    assert result.status == "error" and result.error["node_id"] == SAMPLER
    assert "keyframe" in result.error["exception_message"] and "LoRA" in result.error["exception_message"]


def test_auto_swap_that_cannot_fit_explains_the_smallest_budget(setup):
    runner, _ = setup
    result = runner.run(t2v_prompt(swap={"vram_budget_gb": 0.01}))
    assert result.status == "error" and result.error["exception_type"] == "OutOfMemoryError"
    assert "budget of at least" in result.error["exception_message"]


def test_interrupt_mid_sampling_leaves_no_video_and_frees_memory(setup, host, monkeypatch):
    runner, folders = setup
    freed = []
    monkeypatch.setattr(host, "free_memory", lambda: freed.append(1))
    host.on_progress = lambda node_id, value, total, preview: host.interrupt()
    try:
        result = runner.run(t2v_prompt(steps=40))
    finally:
        host.on_progress = None
    assert result.status == "interrupted" and result.error["node_id"] == SAMPLER
    assert len(result.progress) == 1          # stopped right after the first step
    assert freed, "memory was not given back after the interrupt"
    assert not list(folders["output"].rglob("*.mp4"))
    assert runner.run(t2v_prompt(steps=2)).ok  # the next run is not affected


def test_interrupt_while_writing_leaves_no_partial_file(setup, host):
    _, folders = setup
    import torch
    save = load_pack().NODE_CLASS_MAPPINGS["HyVideoSaveVideo"]()
    host.interrupt()
    with pytest.raises(Exception) as raised:
        save.save(torch.rand(9, 32, 32, 3), "cut", "mp4", 8.0, 23)
    assert type(raised.value).__name__ == "CancelledError"
    assert not [p for p in folders["output"].rglob("*") if p.is_file()]
