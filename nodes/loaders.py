"""Loader nodes: the DiT (any format: bf16/fp16/fp32, fp8 plain or scaled, GGUF), the VAE and the
two text towers (ComfyUI single files with a tokenizer folder, or Hugging Face folders).

Every loader keeps what it loaded in its node instance (ComfyUI keeps one instance per node id),
so re-running it with the same file and settings - e.g. after only the block swap changed -
reuses the weights instead of reading them again.
"""
from __future__ import annotations

import gc
import json
import os

import torch

import hyvideo_core
from hyvideo_core.errors import CheckpointError, HyVideoError
from hyvideo_core.run import LoadedDiT, SwapRequest, load_dit, swaps_under
from hyvideo_core.run.choices import ATTENTION_BACKENDS, DEFAULTS, PRECISIONS, WEIGHT_FORMATS, check_choice, parse_dtype

from .host import host
from .model_handle import HyVideoModel, HyVideoVAE, HyVideoVision

CATEGORY = "HunyuanVideo/loaders"
TOKENIZER_FOLDERS = {"llm": ("llama_tokenizer", os.path.join("comfy", "text_encoders", "llama_tokenizer")),
                     "clip": ("clip_tokenizer", os.path.join("comfy", "sd1_tokenizer"))}


TEXT_STORAGE = ("auto", "compute", "fp8_e4m3fn", "fp8_e5m2")
TEXT_DEVICES = ("main", "cpu")


def check_inputs(**inputs) -> None:
    """A direct call (an API prompt skips nothing, but a script may call the node) with a value outside
    a combo's list: an InvalidInputError naming the input and its choices, instead of a KeyError.
    Each keyword is `name=(value, choices)`."""
    for name, (value, choices) in inputs.items():
        check_choice(name, value, choices)


def file_stamp(kind: str, name: str):
    """(path, mtime, size) of a model file, or None; used to notice a file replaced on disk."""
    try:
        path = host.full_path(kind, name)
    except Exception:  # noqa: BLE001 - a missing file is reported by VALIDATE_INPUTS / the loader
        return None
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def missing_file_message(kind: str, name: str) -> bool | str:
    """VALIDATE_INPUTS answer: True, or the error naming the folders searched."""
    try:
        host.full_path(kind, name)
        return True
    except Exception as error:  # noqa: BLE001 - the message is the answer
        return str(error)


class HyVideoModelLoader:
    DESCRIPTION = ("Loads the HunyuanVideo transformer from diffusion_models (or unet): official, ComfyUI or "
                   "diffusers key names, fp8 (plain or scaled) and GGUF files. The file's content decides the "
                   "format and model variant, never its name.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (host.filenames("diffusion_models"), {
                "tooltip": "The DiT file in models/diffusion_models or models/unet (.safetensors, .pt, .gguf), "
                           "e.g. hunyuan_video_t2v_720p_bf16.safetensors."}),
            "base_precision": (list(PRECISIONS), {
                "default": DEFAULTS.precision, "tooltip": "Compute dtype of the transformer (bf16 is the official one)."}),
            "weight_format": (list(WEIGHT_FORMATS), {
                "default": DEFAULTS.weight_format,
                "tooltip": "How weights are stored in memory. auto: as in the file (GGUF stays quantised, fp8 files "
                           "keep their scales); bf16/fp16/fp32: plain; fp8_e4m3fn/fp8_e5m2: block weights cast to "
                           "fp8 (half the memory of bf16); fp8_e4m3fn_fast: also fp8 matmuls on GPUs that have "
                           "them; fp8_scaled: fp8 with a scale per weight (closer to bf16); gguf: a .gguf file's "
                           "quants."}),
            "attention": (list(ATTENTION_BACKENDS), {
                "default": DEFAULTS.attention,
                "tooltip": "Attention kernel: auto picks sage, then flash, then sdpa (always available). A "
                           "missing package fails here, at load, not during sampling."}),
        }, "optional": {
            "block_swap": ("HYVIDEO_BLOCK_SWAP", {
                "tooltip": "From a Block Swap node: keep some blocks in RAM and stream them to the GPU (for "
                           "24 GB cards). Weights are then loaded to RAM first, never all to the GPU."}),
            "compile": ("HYVIDEO_COMPILE", {"tooltip": "From a Torch Compile node: compile every block."}),
        }}

    RETURN_TYPES = ("HYVIDEO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded transformer, for LoRA and sampler nodes.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def __init__(self):
        self.cached: tuple | None = None   # (key, LoadedModel)

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return missing_file_message("diffusion_models", model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, **_):
        return file_stamp("diffusion_models", model_name)

    def load(self, model_name, base_precision, weight_format, attention, block_swap=None, compile=None):
        check_inputs(base_precision=(base_precision, PRECISIONS), weight_format=(weight_format, WEIGHT_FORMATS),
                     attention=(attention, ATTENTION_BACKENDS))
        path = host.full_path("diffusion_models", model_name)
        stat = os.stat(path)
        main, offload = host.devices()
        home = offload if self._swaps(block_swap) else main  # where the weights load
        key = (path, stat.st_mtime_ns, stat.st_size, base_precision, weight_format, attention, compile, str(home))
        if self.cached is None or self.cached[0] != key:
            self._forget()
            self.cached = (key, self._load(path, base_precision, weight_format, attention, block_swap, compile))
        loaded = self.cached[1]
        text = loaded.summary + ("; " + block_swap.describe() if block_swap else "")
        swap = {} if block_swap is None else dict(swap=block_swap.request, budget_gb=block_swap.budget_gb)
        return {"ui": {"text": [text]}, "result": (HyVideoModel(loaded, **swap),)}

    def _load(self, path, base_precision, weight_format, attention, block_swap, compile) -> LoadedDiT:
        main, offload = host.devices()
        with host.interruptible():
            loaded = load_dit(path, dtype=parse_dtype(base_precision, "base_precision"), weight_format=weight_format,
                              attention=attention, main=main, offload=offload,
                              swapping=self._swaps(block_swap),
                              compile_options=None if compile is None else compile.options())
        host.register_unloadable(loaded)
        return loaded

    @staticmethod
    def _swaps(block_swap) -> bool:
        """Block swapped when sampled (asked for, or ComfyUI's --lowvram / --novram): load into RAM."""
        return swaps_under(host.memory_mode(), block_swap.request if block_swap is not None else SwapRequest())

    def _forget(self) -> None:
        if self.cached is not None:
            self.cached[1].unload()
            self.cached = None
            gc.collect()
            host.free_memory()


class HyVideoVAELoader:
    DESCRIPTION = "Loads the HunyuanVideo 3D VAE (hunyuan_video_vae_bf16.safetensors or Tencent's pytorch_model.pt)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (host.filenames("vae"), {"tooltip": "The VAE file in models/vae, e.g. "
                                                            "hunyuan_video_vae_bf16.safetensors."}),
            "precision": (["auto", *PRECISIONS], {
                "default": "auto",
                "tooltip": "auto: the file's dtype on a GPU, fp32 on a CPU (bf16 convolutions are slow there)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE, for decode, encode and keyframe nodes.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return missing_file_message("vae", vae_name)

    @classmethod
    def IS_CHANGED(cls, vae_name, **_):
        return file_stamp("vae", vae_name)

    def load(self, vae_name, precision):
        check_inputs(precision=(precision, ("auto", *PRECISIONS)))
        path = host.full_path("vae", vae_name)
        main, offload = host.devices()
        dtype = None if precision == "auto" else parse_dtype(precision, "precision")
        if dtype is None and main.type == "cpu":
            dtype = torch.float32
        vae = hyvideo_core.load_vae(path, dtype=dtype, device=offload)  # visits the GPU only while in use
        text = f"{os.path.basename(path)}: {vae.dtype}, encoder {'yes' if vae.encoder is not None else 'no'}"
        return {"ui": {"text": [text]}, "result": (HyVideoVAE(vae, main, offload, text),)}


def text_encoder_choices() -> list[str]:
    """Single files of text_encoders (or clip), then Hugging Face folders written as 'name/'."""
    folders = host.model_dirs("text_encoders")
    inside = tuple(f.rstrip("/\\") + os.sep for f in folders)
    files = [f for f in host.filenames("text_encoders") if not f.startswith(inside)]
    return files + [f + "/" for f in folders]


def text_encoder_path(name: str) -> str:
    if name.endswith("/"):
        return host.full_dir_path("text_encoders", name.rstrip("/"))
    return host.full_path("text_encoders", name)


def tokenizer_folder(role: str, weights: str) -> str | None:
    """The tokenizer for a single-file tower: a `llama_tokenizer` / `clip_tokenizer` folder beside
    the file, else ComfyUI's bundled one. None for a Hugging Face folder (it carries its own)."""
    if os.path.isdir(weights):
        return None
    beside, bundled = TOKENIZER_FOLDERS[role]
    candidates = [os.path.join(os.path.dirname(weights), beside)]
    root = host.comfy_root()
    if root:
        candidates.append(os.path.join(root, bundled))
    for folder in candidates:
        if _has_tokenizer(folder, role):
            return folder
    raise CheckpointError(
        f"{os.path.basename(weights)}: no {'Llama-3' if role == 'llm' else 'CLIP'} tokenizer found; looked in "
        f"{candidates}. Put the tokenizer files (tokenizer.json{' or vocab.json + merges.txt' if role == 'clip' else ''}) "
        f"in a folder named {beside!r} beside the model file, or use a Hugging Face text-encoder folder. "
        "(Some ComfyUI checkouts lack comfy/text_encoders/llama_tokenizer/tokenizer.json.)")


def _has_tokenizer(folder: str, role: str) -> bool:
    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return True
    return role == "clip" and all(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt"))


class HyVideoTextEncoderLoader:
    DESCRIPTION = ("Loads the two text towers: LLaVA-Llama-3 (e.g. llava_llama3_fp8_scaled.safetensors) and CLIP-L "
                   "(clip_l.safetensors) from models/text_encoders, or Hugging Face folders there. Single files take "
                   "their tokenizer from a llama_tokenizer / clip_tokenizer folder beside them, else from ComfyUI.")

    @classmethod
    def INPUT_TYPES(cls):
        choices = text_encoder_choices()
        return {"required": {
            "llm_name": (choices, {"tooltip": "The Llama tower: llava_llama3_fp16/fp8_scaled.safetensors, or a "
                                              "Hugging Face text_encoder folder (shown as 'name/')."}),
            "clip_name": (choices, {"tooltip": "The CLIP-L tower: clip_l.safetensors or a clip-vit-large-patch14 "
                                               "folder (shown as 'name/')."}),
            "precision": (["auto", *PRECISIONS], {
                "default": "auto", "tooltip": "Compute dtype: auto = fp16 on a GPU (the reference), fp32 on a CPU."}),
            "llm_format": (list(TEXT_STORAGE), {
                "default": "auto",
                "tooltip": "Llama weight storage: auto keeps an fp8 file in fp8 (about 8 GB instead of 15); compute "
                           "stores them in the compute dtype; fp8_* casts them to fp8."}),
            "device": (list(TEXT_DEVICES), {
                "default": "main",
                "tooltip": "Where the towers run: main (the GPU; they visit it only while encoding) or cpu "
                           "(slow, but never uses GPU memory)."}),
        }, "optional": {
            "vision": ("HYVIDEO_VISION", {
                "tooltip": "From the HunyuanVideo Vision Tower Loader: adds the LLaVA vision tower for "
                           "image-to-video (HunyuanVideo I2V Text Encode). Leave empty for text to video."}),
        }}

    RETURN_TYPES = ("HYVIDEO_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder, for the Text Encode node.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, llm_name, clip_name):
        for name in (llm_name, clip_name):
            try:
                text_encoder_path(name)
            except Exception as error:  # noqa: BLE001 - the message is the answer
                return str(error)
        return True

    @classmethod
    def IS_CHANGED(cls, llm_name, clip_name, **_):
        return tuple(file_stamp("text_encoders", n) if not n.endswith("/") else n for n in (llm_name, clip_name))

    def load(self, llm_name, clip_name, precision, llm_format, device, vision=None):
        check_inputs(precision=(precision, ("auto", *PRECISIONS)), llm_format=(llm_format, TEXT_STORAGE),
                     device=(device, TEXT_DEVICES))
        llm, clip = text_encoder_path(llm_name), text_encoder_path(clip_name)
        main, offload = host.devices()
        run_on = offload if device == "cpu" else main
        encoder = hyvideo_core.load_text_encoder(
            llm, clip, tokenizer=tokenizer_folder("llm", llm), clip_tokenizer=tokenizer_folder("clip", clip),
            dtype=None if precision == "auto" else parse_dtype(precision, "precision"), device=run_on,
            offload_device=offload, llm_storage=llm_format, vision=None if vision is None else vision.path)
        info = encoder.info
        names = [os.path.basename(source.rstrip("/")) for source in (info.llm_source, info.clip_source)]
        text = f"Llama {names[0]} + CLIP {names[1]}, {info.dtype}, storage {info.llm_storage}, runs on {info.device}"
        if info.vision_source is not None:
            text += f"; vision tower {os.path.basename(str(info.vision_source).rstrip('/'))} (image to video)"
        return {"ui": {"text": [text]}, "result": (encoder,)}


def vision_choices() -> list[str]:
    """Files of clip_vision, then LLaVA folders of text_encoders (a config.json with a vision_config)
    written as 'name/'."""
    folders = [f + "/" for f in host.model_dirs("text_encoders") if _is_llava_folder(f)]
    return list(host.filenames("clip_vision")) + folders


def _is_llava_folder(name: str) -> bool:
    try:
        with open(os.path.join(host.full_dir_path("text_encoders", name), "config.json"), encoding="utf-8") as f:
            return "vision_config" in json.load(f)
    except (OSError, ValueError, HyVideoError):
        return False


def vision_path(name: str) -> str:
    if name.endswith("/"):
        return host.full_dir_path("text_encoders", name.rstrip("/"))
    return host.full_path("clip_vision", name)


class HyVideoVisionLoader:
    DESCRIPTION = ("Picks the LLaVA vision tower for image to video: ComfyUI's llava_llama3_vision.safetensors from "
                   "models/clip_vision, or the llava-llama-3-8b-v1_1-transformers folder (HunyuanVideo-I2V's "
                   "text_encoder_i2v) in models/text_encoders. Connect it to the Text Encoder Loader's vision input; "
                   "the tower is loaded and checked there, with the Llama it feeds.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vision_name": (vision_choices(), {
                "tooltip": "llava_llama3_vision.safetensors (models/clip_vision), or a LLaVA folder of "
                           "models/text_encoders (shown as 'name/'). A plain CLIP vision file (no LLaVA "
                           "projector) cannot feed the Llama and is refused."}),
        }}

    RETURN_TYPES = ("HYVIDEO_VISION",)
    RETURN_NAMES = ("vision",)
    OUTPUT_TOOLTIPS = ("The vision tower file, for the Text Encoder Loader's vision input.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, vision_name):
        try:
            vision_path(vision_name)
        except Exception as error:  # noqa: BLE001 - the message is the answer
            return str(error)
        return True

    @classmethod
    def IS_CHANGED(cls, vision_name):
        return vision_name if vision_name.endswith("/") else file_stamp("clip_vision", vision_name)

    def load(self, vision_name):
        path = vision_path(vision_name)
        return {"ui": {"text": [f"vision tower: {path}"]}, "result": (HyVideoVision(path, vision_name),)}


NODE_CLASS_MAPPINGS = {
    "HyVideoModelLoader": HyVideoModelLoader,
    "HyVideoVAELoader": HyVideoVAELoader,
    "HyVideoTextEncoderLoader": HyVideoTextEncoderLoader,
    "HyVideoVisionLoader": HyVideoVisionLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HyVideoModelLoader": "HunyuanVideo Model Loader",
    "HyVideoVAELoader": "HunyuanVideo VAE Loader",
    "HyVideoTextEncoderLoader": "HunyuanVideo Text Encoder Loader",
    "HyVideoVisionLoader": "HunyuanVideo Vision Tower Loader",
}
