"""Where the model files are: explicit paths, or the public file names in a ComfyUI models folder."""
from __future__ import annotations

from pathlib import Path

from .errors import InvalidInputError
from .run.settings import ModelFiles

# The names the files are published under, preferred first, and the ComfyUI folders they go in.
PUBLIC_NAMES = {
    "dit": (("diffusion_models", "unet"), (
        "hunyuan_video_t2v_720p_bf16.safetensors", "hunyuan_video_720_cfgdistill_bf16.safetensors",
        "hunyuan_video_720_cfgdistill_fp8_e4m3fn.safetensors", "hunyuan-video-t2v-720p-Q8_0.gguf",
        "hunyuan-video-t2v-720p-Q4_K_M.gguf", "mp_rank_00_model_states.pt")),
    "vae": (("vae",), ("hunyuan_video_vae_bf16.safetensors", "hunyuan_video_vae_fp32.safetensors", "pytorch_model.pt")),
    "llm": (("text_encoders", "clip", "LLM"), (
        "llava_llama3_fp8_scaled.safetensors", "llava_llama3_fp16.safetensors", "llava-llama-3-8b-text-encoder-tokenizer")),
    "clip": (("text_encoders", "clip"), ("clip_l.safetensors", "clip-vit-large-patch14")),
}
# ComfyUI ships the tokenizers of its native HunyuanVideo text encoder beside its code.
COMFY_TOKENIZERS = {"tokenizer": "comfy/text_encoders/llama_tokenizer", "clip_tokenizer": "comfy/sd1_tokenizer"}


def find_model_files(models_dir: Path | None, **given: Path | None) -> ModelFiles:
    """Explicit paths win; the rest are looked up by public name in `models_dir`."""
    found = {}
    for role, (folders, names) in PUBLIC_NAMES.items():
        path = given.get(role)
        if path is None:
            path = _search(models_dir, role, folders, names)
        if not Path(path).exists():
            raise InvalidInputError(f"--{role} {path}: no such file or folder.")
        found[role] = Path(path)
    for role, relative in COMFY_TOKENIZERS.items():
        path = given.get(role)
        if path is None and models_dir is not None and (Path(models_dir).parent / relative).is_dir():
            path = Path(models_dir).parent / relative
        found[role] = path
    return ModelFiles(**found)


def _search(models_dir: Path | None, role: str, folders, names) -> Path:
    if models_dir is None:
        raise InvalidInputError(f"--{role}: give the file, or --models-dir with a ComfyUI models folder.")
    searched = [Path(models_dir) / f for f in folders]
    for name in names:
        for folder in searched:
            if (folder / name).exists():
                return folder / name
    raise InvalidInputError(
        f"--{role}: none of {list(names)} is in {[str(s) for s in searched]}. Download one (see README) "
        f"or pass --{role} PATH.")
