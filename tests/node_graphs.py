"""API prompts over the pack's nodes for the node tests, and a runner over tiny models.

    runner, folders = tiny_runner(tmp_path)           # tiny models under the public names
    result = runner.run(t2v_prompt(lora=0.5)).expect_success()
    latent = sampled(result)                           # the sampler's LATENT samples

Sizes are tiny (32x32, 5 frames, 2 steps) and the DiT/VAE run in float32, so a run takes well
under a second once the models are loaded.
"""
from __future__ import annotations

from pathlib import Path

from harness import pack_runner
from tiny_models import write_inputs, write_models

DIT = "hunyuan_video_t2v_720p_bf16.safetensors"
VAE = "hunyuan_video_vae_bf16.safetensors"
LLM, CLIP = "llava_llama3_fp16.safetensors", "clip_l.safetensors"
LORA, LORA_2, KEYFRAME_LORA = "style_lora.safetensors", "other_lora.safetensors", "i2v.sft"
GGUF, FP8 = "hunyuan-video-t2v-720p-Q4_K_M.gguf", "hunyuan_video_720_cfgdistill_fp8_e4m3fn.safetensors"
MODEL_FILES = (DIT, VAE, LLM, CLIP, LORA, KEYFRAME_LORA, GGUF, FP8)
SAMPLER, SAVE, PARALLEL = "4", "7", "32"


def tiny_runner(tmp_path: Path, cache_dir: Path | None = None, extra_nodes: dict | None = None,
                inputs=("first.png", "last.png", "clip.mp4")):
    folders = {name: tmp_path / name for name in ("models", "output", "input")}
    write_models(folders["models"], MODEL_FILES, cache_dir=cache_dir)
    write_models(folders["models"], [LORA_2], cache_dir=None)  # a second LoRA with other weights
    _reseed_second_lora(folders["models"] / "loras" / LORA_2)
    write_inputs(folders["input"], inputs)
    runner = pack_runner(models_dir=folders["models"], output_dir=folders["output"], input_dir=folders["input"],
                         extra_nodes=extra_nodes)
    return runner, folders


def _reseed_second_lora(path: Path) -> None:
    from tiny_models import write_lora
    write_lora(path, seed=7)


def t2v_prompt(*, loras=(), seed: int = 3, steps: int = 2, width: int = 32, height: int = 32, frames: int = 5,
               model: str = DIT, weight_format: str = "auto", cache: dict | None = None, swap: dict | None = None,
               prompt_text: str = "a red fox at sunset", parallel: dict | None = None, **sampler) -> dict:
    """loader (-> LoRA select ...) -> sampler <- text encode; VAE decode -> save video.
    `loras`: (file, strength[, blocks]) items chained in order (node ids 20, 21, ...)."""
    prompt = {
        "1": node("HyVideoModelLoader", model_name=model, base_precision="fp32", weight_format=weight_format,
                  attention="sdpa"),
        "2": node("HyVideoTextEncoderLoader", llm_name=LLM, clip_name=CLIP, precision="fp32", llm_format="auto",
                  device="main"),
        "3": node("HyVideoTextEncode", text_encoder=["2", 0], prompt=prompt_text, negative_prompt="",
                  template="video", custom_template=""),
        SAMPLER: node("HyVideoSampler", model=["1", 0], embeds=["3", 0], width=width, height=height, frames=frames,
                      steps=steps, shift=7.0, embedded_guidance=6.0, true_cfg_scale=1.0, cfg_mode="batched",
                      seed=seed, denoise=1.0, solver="euler"),
        "5": node("HyVideoVAELoader", vae_name=VAE, precision="fp32"),
        "6": node("HyVideoVAEDecode", vae=["5", 0], samples=[SAMPLER, 0], tiling="off", spatial_tile=256,
                  spatial_overlap=64, temporal_tile=64, temporal_overlap=16),
    }
    prompt[SAMPLER]["inputs"].update(sampler)
    prompt[SAVE] = node("HyVideoSaveVideo", images=["6", 0], filename_prefix="test", format="mp4", fps=8.0, crf=23)
    upstream = ["1", 0]
    for index, item in enumerate(loras):
        name, strength, *blocks = item
        node_id = str(20 + index)
        prompt[node_id] = node("HyVideoLoraSelect", model=upstream, lora_name=name, strength=strength,
                               blocks=blocks[0] if blocks else "")
        upstream = [node_id, 0]
    if parallel is not None:
        prompt[PARALLEL] = node("HyVideoParallel", model=upstream, **{"devices": "cpu,cpu", "ulysses_degree": 2,
                                                                        "ring_degree": 1, "cfg_parallel": False,
                                                                        **parallel})
        upstream = [PARALLEL, 0]
    prompt[SAMPLER]["inputs"]["model"] = upstream
    if cache is not None:
        prompt["30"] = node(cache.pop("kind", "HyVideoTeaCache"), **{"threshold": 0.15, "start_step": 0,
                                                                     "end_step": -1, "cache_device": "main", **cache})
        prompt[SAMPLER]["inputs"]["cache"] = ["30", 0]
    if swap is not None:
        prompt["31"] = node("HyVideoBlockSwap", **{"double_blocks_to_swap": -1, "single_blocks_to_swap": -1,
                                                   "vram_budget_gb": 0.0, "offload_txt_in": False,
                                                   "offload_img_in": False, "prefetch": True, **swap})
        prompt["1"]["inputs"]["block_swap"] = ["31", 0]
    return prompt


PLAN_DEFAULTS = dict(width=32, height=32, frames=5, weight_format="bf16", attention="sdpa", double_blocks_to_swap=0,
                     single_blocks_to_swap=0, true_cfg_scale=1.0, vae_tiling="auto", vram_budget_gb=0.0)


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def sampled(result, node_id: str = SAMPLER):
    return result.results[node_id][0]["samples"]


def ui_text(result, node_id: str) -> str:
    return "\n".join(result.outputs.get(node_id, {}).get("text", []))


# -- image to video (HunyuanVideo-I2V) ---------------------------------------------------------
I2V_DIT = "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors"      # 16 ch, token_replace
I2V_CONCAT_DIT = "hunyuan_video_image_to_video_720p_bf16.safetensors"          # 33 ch, latent_concat
VISION = "llava_llama3_vision.safetensors"
I2V_FILES = (I2V_DIT, I2V_CONCAT_DIT, VISION)
I2V_ENCODE, VISION_LOADER, IMAGE = "40", "41", "42"


def i2v_runner(tmp_path: Path, cache_dir: Path | None = None, **kwargs):
    """tiny_runner plus the I2V files (both DiTs and the vision tower) under their public names."""
    runner, folders = tiny_runner(tmp_path, cache_dir, **kwargs)
    write_models(folders["models"], I2V_FILES, cache_dir=cache_dir)
    return runner, folders


def i2v_prompt(*, image: str = "first.png", mode: str = "auto", stability: bool = True, model: str = I2V_DIT,
               width: int = 32, height: int = 32, interleave: int = 4,
               prompt_text: str = "a red fox runs off", **t2v) -> dict:
    """t2v_prompt with the image: Load Image -> I2V Encode -> sampler image_cond; Vision Tower Loader ->
    Text Encoder Loader's vision; I2V Text Encode in place of Text Encode."""
    prompt = t2v_prompt(model=model, width=width, height=height, **t2v)
    prompt[VISION_LOADER] = node("HyVideoVisionLoader", vision_name=VISION)
    prompt["2"]["inputs"]["vision"] = [VISION_LOADER, 0]
    prompt[IMAGE] = node("HyVideoLoadImage", image=image)
    prompt["3"] = node("HyVideoI2VTextEncode", text_encoder=["2", 0], image=[IMAGE, 0], prompt=prompt_text,
                       negative_prompt="", image_interleave=interleave, template="video")
    prompt[I2V_ENCODE] = node("HyVideoI2VEncode", vae=["5", 0], image=[IMAGE, 0], width=width, height=height,
                              mode=mode, stability=stability)
    prompt[SAMPLER]["inputs"]["image_cond"] = [I2V_ENCODE, 0]
    return prompt
