"""Prompt pieces for our DiT under ComfyUI's native samplers, shared by the real-host test
(test_comfyui_native.py) and the in-process harness run (harness_native_run.py): our text
encoding and its native CONDITIONING, our loader, our sampler, the native MODEL bridge, native
KSampler, and the block swap / LoRA / TeaCache nodes that must stay in force under it."""
from __future__ import annotations

PROMPT_TEXT = "A cat walks on the grass, realistic style."
SIZE = {"width": 64, "height": 64, "frames": 5}


def text_nodes() -> dict:
    return {
        "t1": {"class_type": "HyVideoTextEncoderLoader",
               "inputs": {"llm_name": "llava_llama3_fp16.safetensors", "clip_name": "clip_l.safetensors",
                          "precision": "fp32", "llm_format": "auto", "device": "main"}},
        "t2": {"class_type": "HyVideoTextEncode",
               "inputs": {"text_encoder": ["t1", 0], "prompt": PROMPT_TEXT, "negative_prompt": "",
                          "template": "video", "custom_template": ""}},
        "t3": {"class_type": "HyVideoEmbedsToConditioning", "inputs": {"embeds": ["t2", 0]}},
        "e1": {"class_type": "EmptyHunyuanLatentVideo",
               "inputs": {"width": SIZE["width"], "height": SIZE["height"], "length": SIZE["frames"], "batch_size": 1}},
    }


def loader(weight_format: str = "fp32", block_swap=None) -> dict:
    inputs = {"model_name": "tiny_dit.safetensors", "base_precision": "fp32", "weight_format": weight_format,
              "attention": "sdpa"}
    if block_swap is not None:
        inputs["block_swap"] = block_swap
    return {"class_type": "HyVideoModelLoader", "inputs": inputs}


def ours(model, steps: int, seed: int, shift: float = 7.0, guidance: float = 6.0, cache=None) -> dict:
    inputs = {"model": model, "embeds": ["t2", 0], **SIZE, "steps": steps, "shift": shift,
              "embedded_guidance": guidance, "true_cfg_scale": 1.0, "cfg_mode": "batched", "seed": seed,
              "denoise": 1.0, "solver": "euler"}
    if cache is not None:
        inputs["cache"] = cache
    return {"class_type": "HyVideoSampler", "inputs": inputs}


def native(handle, shift: float = 7.0, cache=None) -> dict:
    inputs = {"model": handle, "shift": shift}
    if cache is not None:
        inputs["cache"] = cache
    return {"class_type": "HyVideoToNativeModel", "inputs": inputs}


def ksampler(model, steps: int, seed: int, positive=("t3", 0)) -> dict:
    return {"class_type": "KSampler",
            "inputs": {"model": model, "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler",
                       "scheduler": "simple", "positive": list(positive), "negative": ["t3", 1],
                       "latent_image": ["e1", 0], "denoise": 1.0}}


def sampler_custom_advanced(steps: int, seed: int, shift: float) -> dict:
    """SamplerCustomAdvanced (node x1) on the native MODEL n1 with ModelSamplingSD3's shift,
    BasicScheduler (simple), BasicGuider and euler."""
    return {"n2": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["n1", 0], "shift": shift}},
            "g1": {"class_type": "BasicGuider", "inputs": {"model": ["n2", 0], "conditioning": ["t3", 0]}},
            "k1": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "s1": {"class_type": "BasicScheduler", "inputs": {"model": ["n2", 0], "scheduler": "simple",
                                                             "steps": steps, "denoise": 1.0}},
            "r1": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
            "x1": {"class_type": "SamplerCustomAdvanced",
                   "inputs": {"noise": ["r1", 0], "guider": ["g1", 0], "sampler": ["k1", 0], "sigmas": ["s1", 0],
                              "latent_image": ["e1", 0]}}}


def teacache(threshold: float) -> dict:
    return {"class_type": "HyVideoTeaCache",
            "inputs": {"threshold": threshold, "start_step": 0, "end_step": -1, "cache_device": "main"}}


def block_swap(double: int = 1, single: int = 1) -> dict:
    return {"class_type": "HyVideoBlockSwap",
            "inputs": {"double_blocks_to_swap": double, "single_blocks_to_swap": single, "vram_budget_gb": 0.0,
                       "offload_txt_in": False, "offload_img_in": False, "prefetch": True}}


def lora_select(model, lora_name: str = "hyvideo_FastVideo_LoRA-fp8.safetensors", strength: float = 1.0) -> dict:
    return {"class_type": "HyVideoLoraSelect",
            "inputs": {"model": model, "lora_name": lora_name, "strength": strength, "blocks": ""}}
