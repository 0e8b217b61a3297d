"""Tiny model files under the public file names, in a temporary ComfyUI-style models folder.

Workflows name the files users download (hunyuan_video_t2v_720p_bf16.safetensors, ...). The
tests write tiny models of the real architecture under those very names, so a workflow runs
unchanged in the harness and in a real ComfyUI:

    write_models(tmp_path / "models", file_inputs(prompt))   # every file the prompt names

The DiT and VAE are the golden tiny models (tests/golden); the text towers come from the text
tests' builders (tests/test_text_tiny.py) and have the tiny DiT's text widths (64 and 32).
A writer is picked by PUBLIC_FILES, else by words in the name; add entries as workflows grow.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_DIT = GOLDEN / "dit" / "weights.safetensors"
GOLDEN_VAE = GOLDEN / "vae" / "weights.safetensors"


def write_dit(path: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """The golden tiny DiT with official key names, stored in `dtype` (the public files are bf16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype) for k, v in load_file(str(GOLDEN_DIT)).items()}, str(path))
    return path


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


def write_llm(path: Path) -> Path:
    """A tiny Llama in ComfyUI's single-file layout (model.* keys), like llava_llama3_fp16.safetensors."""
    from transformers import LlamaForCausalLM
    text = _text_builders()
    torch.manual_seed(0)
    llama = LlamaForCausalLM(text.tiny_llama_config()).eval()
    state = text.comfy_llama_state(llama)
    if "fp8" in path.name:
        save_file(text.comfy_llama_fp8_scaled(state), str(path))
    else:
        save_file({k: v.to(torch.float16) for k, v in state.items()}, str(path))
    return path


def write_clip(path: Path) -> Path:
    """A tiny CLIP text model in ComfyUI's clip_l.safetensors layout (text_model.* keys)."""
    from transformers import CLIPTextModel
    text = _text_builders()
    torch.manual_seed(0)
    clip = CLIPTextModel(text.tiny_clip_config(eos_token_id=1)).eval()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
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


# public file name -> (ComfyUI model folder kind, writer)
Writer = Callable[[Path], Path]
PUBLIC_FILES: dict[str, tuple[str, Writer]] = {
    "hunyuan_video_t2v_720p_bf16.safetensors": ("diffusion_models", write_dit),
    "hunyuan_video_vae_bf16.safetensors": ("vae", write_vae),
    "clip_l.safetensors": ("text_encoders", write_clip),
    "llava_llama3_fp16.safetensors": ("text_encoders", write_llm),
    "llava_llama3_fp8_scaled.safetensors": ("text_encoders", write_llm),
}
KIND_SUBFOLDER = {"diffusion_models": "diffusion_models", "vae": "vae", "text_encoders": "text_encoders",
                  "loras": "loras"}


def writer_for(name: str) -> tuple[str, Writer]:
    if name in PUBLIC_FILES:
        return PUBLIC_FILES[name]
    lowered = name.lower()
    if "vae" in lowered:
        return "vae", write_vae
    if "clip" in lowered:
        return "text_encoders", write_clip
    if "llama" in lowered or "llava" in lowered:
        return "text_encoders", write_llm
    if "lora" in lowered:
        raise KeyError(f"no tiny writer for LoRA file {name!r}: add it to tests/tiny_models.PUBLIC_FILES")
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
        else:
            writer(target)
        written[name] = target
    return written
