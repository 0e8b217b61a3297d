"""Tiny model files under the public file names, in a temporary ComfyUI-style models folder.

Workflows name the files users download (hunyuan_video_t2v_720p_bf16.safetensors, ...). The
tests write tiny models of the real architecture under those very names, so a workflow runs
unchanged in the harness and in a real ComfyUI:

    write_models(tmp_path / "models", file_inputs(prompt))   # every file the prompt names
    write_inputs(tmp_path / "input", input_files(prompt))    # images / videos it loads

The DiT and VAE are the golden tiny models (tests/golden); the text towers come from the text
tests' builders (tests/test_text_tiny.py) and have the tiny DiT's text widths (64 and 32); single
text-encoder files get tiny tokenizers in `llama_tokenizer/` and `clip_tokenizer/` beside them
(where the loader looks first). fp8, GGUF and LoRA files are derived from the golden DiT. A
writer is picked by PUBLIC_FILES, else by words in the name; add entries as workflows grow.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from golden_dit_weights import dit_weights_path

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_VAE = GOLDEN / "vae" / "weights.safetensors"
TOKENIZER_FOLDERS = ("llama_tokenizer", "clip_tokenizer")


def golden_dit_state() -> dict[str, torch.Tensor]:
    """The golden DiT's weights (regenerated and digest-checked: see golden_dit_weights.py)."""
    return load_file(str(dit_weights_path(json.loads((GOLDEN / "dit" / "config.json").read_text()))))


def write_dit(path: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """The golden tiny DiT with official key names, stored in `dtype` (the public files are bf16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype) for k, v in golden_dit_state().items()}, str(path))
    return path


def write_dit_fp8(path: Path) -> Path:
    """Like Kijai's *_fp8_e4m3fn.safetensors: block Linear weights cast to fp8 (no scales), the rest bf16."""
    from hyvideo_core.weights.quantised_layers import is_quantisable
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(torch.float8_e4m3fn if is_quantisable(k, tuple(v.shape)) else torch.bfloat16)
             for k, v in golden_dit_state().items()}
    save_file(state, str(path))
    return path


def write_dit_gguf(path: Path) -> Path:
    """A city96-style GGUF of the golden DiT. The tiny file holds Q4_0 quants whatever its name says
    (the gguf package cannot write K-quants); the loader goes by the content, never the name."""
    from gguf import GGMLQuantizationType
    from gguf_write import write_gguf
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_gguf(golden_dit_state(), path, GGMLQuantizationType.Q4_0)


def write_vae(path: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype) for k, v in load_file(str(GOLDEN_VAE)).items()}, str(path))
    return path


def _text_builders():
    try:
        import test_text_tiny  # the text tests' builders (tests/ is on sys.path under pytest)
    except ImportError as error:
        raise RuntimeError("tiny text encoders need tests/test_text_tiny.py (the text tests' builders)") from error
    return test_text_tiny


def write_tokenizers(folder: Path) -> Path:
    """The tiny Llama and CLIP tokenizers in `folder`/llama_tokenizer and `folder`/clip_tokenizer.
    The Llama one is Llama-3-like enough for image to video too (save_i2v_llama_tokenizer)."""
    text = _text_builders()
    if not (folder / "llama_tokenizer" / "tokenizer.json").is_file():
        save_i2v_llama_tokenizer(folder / "llama_tokenizer")
    if not (folder / "clip_tokenizer" / "tokenizer.json").is_file():
        text.save_clip_tokenizer(folder / "clip_tokenizer")
    return folder


def single_file_llama_config():
    """The text tests' tiny Llama with one 64-wide head: a single file carries no config, and the
    loader reads the head count as hidden / 128 (Llama-3's head width), at least one."""
    config = _text_builders().tiny_llama_config()
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 1, 1, config.hidden_size
    return config


def single_file_clip_config():
    """The text tests' tiny CLIP with one head (the loader reads hidden / 64 heads, at least one)."""
    config = _text_builders().tiny_clip_config(eos_token_id=1)
    config.num_attention_heads = 1
    return config


def write_llm(path: Path) -> Path:
    """A tiny Llama in ComfyUI's single-file layout (model.* keys), like llava_llama3_fp16.safetensors."""
    from transformers import LlamaForCausalLM
    text = _text_builders()
    torch.manual_seed(0)
    llama = LlamaForCausalLM(single_file_llama_config()).eval()
    state = text.comfy_llama_state(llama)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "fp8" in path.name:
        save_file(text.comfy_llama_fp8_scaled(state), str(path))
    else:
        save_file({k: v.to(torch.float16) for k, v in state.items()}, str(path))
    write_tokenizers(path.parent)
    return path


def write_clip(path: Path) -> Path:
    """A tiny CLIP text model in ComfyUI's clip_l.safetensors layout (text_model.* keys)."""
    from transformers import CLIPTextModel
    torch.manual_seed(0)
    clip = CLIPTextModel(single_file_clip_config()).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    write_tokenizers(path.parent)
    return path


def write_text_encoder_folders(folder: Path) -> Path:
    """The Hugging Face folder layout (text_encoder/, text_encoder_2/ with tokenizers)."""
    from transformers import CLIPTextModel, LlamaForCausalLM
    text = _text_builders()
    torch.manual_seed(0)
    llm = folder / "text_encoder"
    LlamaForCausalLM(text.tiny_llama_config()).eval().save_pretrained(str(llm))
    text.save_llama_tokenizer(llm)
    clip = folder / "text_encoder_2"
    text.save_clip_tokenizer(clip)
    eos = text.load_tokenizer(clip).eos_token_id
    CLIPTextModel(text.tiny_clip_config(eos)).eval().save_pretrained(str(clip))
    return folder


# -- LoRAs of the tiny DiT (hidden 64, 2 double + 2 single blocks) ------------------------------
def _lora_pair(g, rows: int, cols: int, rank: int, kernel=(), scale: float = 0.2):
    down = torch.randn(rank, cols, *kernel, generator=g) / math.sqrt(cols)
    up = torch.randn(rows, rank, *([1] * len(kernel)), generator=g) * scale
    return down, up


def write_lora(path: Path, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A LoRA in ComfyUI / diffusion-pipe naming (`diffusion_model.<official>.lora_A/B.weight`) on the
    attention and MLP of every block, like the public HunyuanVideo LoRAs. `-fp8` in the name stores
    the tensors in fp8 (as Kijai's FastVideo LoRA file)."""
    g = torch.Generator().manual_seed(seed)
    hidden, mlp = 64, 256
    targets = {}
    for i in range(2):
        targets[f"double_blocks.{i}.img_attn_qkv"] = (3 * hidden, hidden)
        targets[f"double_blocks.{i}.txt_attn_qkv"] = (3 * hidden, hidden)
        targets[f"double_blocks.{i}.img_mlp.fc1"] = (mlp, hidden)
        targets[f"single_blocks.{i}.linear1"] = (3 * hidden + mlp, hidden)
        targets[f"single_blocks.{i}.linear2"] = (hidden, hidden + mlp)
    if "fp8" in path.name.lower():
        dtype = torch.float8_e4m3fn
    state = {}
    for module, (rows, cols) in targets.items():
        down, up = _lora_pair(g, rows, cols, rank=4)
        state[f"diffusion_model.{module}.lora_A.weight"] = down.to(dtype)
        state[f"diffusion_model.{module}.lora_B.weight"] = up.to(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_keyframe_lora(path: Path, seed: int = 1) -> Path:
    """dashtoon's keyframe LoRA layout (diffusers names, `.sft`): a 32-channel patch-embed LoRA plus
    attention LoRAs; the patch-embed A's 32 input channels make the model a keyframe model."""
    g = torch.Generator().manual_seed(seed)
    hidden = 64
    state = {}
    down, up = _lora_pair(g, hidden, 32, rank=4, kernel=(1, 2, 2))
    state["transformer.x_embedder.proj.lora_A.weight"], state["transformer.x_embedder.proj.lora_B.weight"] = down, up
    for name, cols in (("transformer_blocks.0.attn.to_q", hidden), ("transformer_blocks.0.attn.to_k", hidden),
                       ("single_transformer_blocks.1.proj_out", hidden * 5)):
        down, up = _lora_pair(g, hidden, cols, rank=4)
        state[f"transformer.{name}.lora_A.weight"], state[f"transformer.{name}.lora_B.weight"] = down, up
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(path))
    return path


# -- media for the input folder ----------------------------------------------------------------
def write_image(path: Path, width: int = 80, height: int = 48, seed: int = 0) -> Path:
    from PIL import Image
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 7.0 + seed)], -1)
    pixels = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
    return path


def write_clip_video(path: Path, frames: int = 12, width: int = 80, height: int = 48) -> Path:
    from hyvideo_core.video import write_video
    t = torch.linspace(0, 1, frames)[:, None, None, None]
    y = torch.linspace(0, 1, height)[None, :, None, None]
    x = torch.linspace(0, 1, width)[None, None, :, None]
    video = torch.cat([(x + t).remainder(1).expand(frames, height, width, 1), y.expand(frames, height, width, 1),
                       (0.5 + 0.5 * torch.sin(6 * (x + y) + 3 * t)).expand(frames, height, width, 1)], -1)
    return write_video(video, path, fps=24)


# public file name -> (ComfyUI model folder kind, writer)
Writer = Callable[[Path], Path]
PUBLIC_FILES: dict[str, tuple[str, Writer]] = {
    "hunyuan_video_t2v_720p_bf16.safetensors": ("diffusion_models", write_dit),
    "hunyuan_video_720_cfgdistill_fp8_e4m3fn.safetensors": ("diffusion_models", write_dit_fp8),
    "hunyuan-video-t2v-720p-Q4_K_M.gguf": ("diffusion_models", write_dit_gguf),
    "hunyuan_video_vae_bf16.safetensors": ("vae", write_vae),
    "clip_l.safetensors": ("text_encoders", write_clip),
    "llava_llama3_fp16.safetensors": ("text_encoders", write_llm),
    "llava_llama3_fp8_scaled.safetensors": ("text_encoders", write_llm),
    "hyvideo_FastVideo_LoRA-fp8.safetensors": ("loras", write_lora),
    "i2v.sft": ("loras", write_keyframe_lora),
}
KIND_SUBFOLDER = {"diffusion_models": "diffusion_models", "vae": "vae", "text_encoders": "text_encoders",
                  "loras": "loras"}
INPUT_WRITERS = {".png": write_image, ".jpg": write_image, ".mp4": write_clip_video, ".webm": write_clip_video}


def writer_for(name: str) -> tuple[str, Writer]:
    if name in PUBLIC_FILES:
        return PUBLIC_FILES[name]
    lowered = name.lower()
    if "lora" in lowered:
        return "loras", write_lora
    if "vae" in lowered:
        return "vae", write_vae
    if "clip" in lowered:
        return "text_encoders", write_clip
    if "llama" in lowered or "llava" in lowered:
        return "text_encoders", write_llm
    if lowered.endswith(".gguf"):
        return "diffusion_models", write_dit_gguf
    if "fp8" in lowered:
        return "diffusion_models", write_dit_fp8
    if lowered.endswith((".safetensors", ".sft")):
        return "diffusion_models", write_dit
    raise KeyError(f"no tiny writer for model file {name!r}: add it to tests/tiny_models.PUBLIC_FILES")


def write_models(models_dir: Path, names, cache_dir: Path | None = None) -> dict[str, Path]:
    """Write a tiny model for every file name in `names` into `models_dir/<kind>/`; returns name -> path.
    With `cache_dir`, each file is built once and copied (text towers take a few seconds)."""
    written = {}
    for name in sorted(names):
        kind, writer = writer_for(name)
        target = Path(models_dir) / KIND_SUBFOLDER[kind] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if cache_dir is not None:
            cached = Path(cache_dir) / kind / name
            if not cached.exists():
                cached.parent.mkdir(parents=True, exist_ok=True)
                writer(cached)
            shutil.copyfile(cached, target)
            for companion in TOKENIZER_FOLDERS:  # tokenizers written beside single text-encoder files
                if (cached.parent / companion).is_dir() and not (target.parent / companion).exists():
                    shutil.copytree(cached.parent / companion, target.parent / companion)
        else:
            writer(target)
        written[name] = target
    return written


def write_inputs(input_dir: Path, names) -> dict[str, Path]:
    """A small image or video in `input_dir` for every input file name (by extension)."""
    written = {}
    for seed, name in enumerate(sorted(names)):
        writer = INPUT_WRITERS.get(Path(name).suffix.lower())
        if writer is None:
            raise KeyError(f"no tiny writer for input file {name!r}: add its extension to tests/tiny_models.INPUT_WRITERS")
        target = Path(input_dir) / name
        written[name] = writer(target, seed=seed) if writer is write_image else writer(target)
    return written


# -- image to video (HunyuanVideo-I2V) ----------------------------------------------------------
def _i2v_builders():
    try:
        import test_text_i2v  # the I2V text tests' builders (tiny LLaVA, Llama-3-like tokenizer)
    except ImportError as error:
        raise RuntimeError("tiny I2V files need tests/test_text_i2v.py (the I2V text tests' builders)") from error
    return test_text_i2v


def save_i2v_llama_tokenizer(folder: Path) -> Path:
    """The tiny Llama tokenizer of every single-file Llama here (ComfyUI's llama_tokenizer serves T2V
    and I2V alike): Llama-3's pre-tokenizer ("\\n\\n" is one token) and an `<image>` token."""
    return _i2v_builders().save_i2v_tokenizer(Path(folder))


def write_vision(path: Path) -> Path:
    """A tiny LLaVA vision tower in ComfyUI's clip_vision/llava_llama3_vision.safetensors layout
    (vision_model.* + multi_modal_projector.*, no config): 28 px images in 7 px patches, one head
    (the loader reads hidden / 64 heads, at least one), projected to the tiny Llama's width 64."""
    i2v = _i2v_builders()
    model = i2v.tiny_llava(image_id=0)  # the id lives in the tokenizer; this file has no config
    state = i2v.comfy_vision_state(i2v.xtuner_state(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(path))
    return path


def write_dit_i2v_concat(path: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """HunyuanVideo-I2V's first release (latent_concat) from the golden DiT: a 33-channel patch embed
    (noise 16 + image latent 16 + mask 1) and no guidance_in, as the public v1 concat file."""
    state = {k: v for k, v in golden_dit_state().items() if not k.startswith("guidance_in.")}
    weight = state["img_in.proj.weight"]
    g = torch.Generator().manual_seed(5)
    extra = torch.randn(weight.shape[0], 33 - weight.shape[1], *weight.shape[2:], generator=g) * weight.std()
    state["img_in.proj.weight"] = torch.cat([weight, extra.to(weight.dtype)], dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(path))
    return path


PUBLIC_FILES.update({
    # v2 replace (token_replace) has the T2V file's shapes: the golden DiT under its name.
    "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors": ("diffusion_models", write_dit),
    "hunyuan_video_image_to_video_720p_bf16.safetensors": ("diffusion_models", write_dit_i2v_concat),
    "llava_llama3_vision.safetensors": ("clip_vision", write_vision),
})
KIND_SUBFOLDER["clip_vision"] = "clip_vision"
