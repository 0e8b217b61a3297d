"""`load_text_encoder`: the Llama and CLIP files users have -> a ready TextEncoder.

Accepted for `llm`:
- a Hugging Face folder: the `text_encoder` folder made by HunyuanVideo's preprocessing
  script (LlamaForCausalLM, config.json + safetensors + tokenizer), a whole
  llava-llama-3-8b-v1_1-transformers folder, or a folder holding `text_encoder/`
  (HunyuanVideo ckpts/ or a diffusers pipeline folder);
- a single file: ComfyUI's llava_llama3_fp16.safetensors / llava_llama3_fp8_scaled.safetensors
  (config built in code, tokenizer from the `tokenizer` folder).
Accepted for `clip`: a clip-vit-large-patch14 folder (or a folder holding `text_encoder_2/`),
or ComfyUI's clip_l.safetensors with `clip_tokenizer`.
Accepted for `vision` (optional, HunyuanVideo-I2V's image + text encoding, vision_loader.py): the
whole llava-llama-3-8b-v1_1-transformers folder (`text_encoder_i2v`, which also serves as `llm`),
or ComfyUI's clip_vision/llava_llama3_vision.safetensors beside the usual Llama files.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from ..errors import CheckpointError, InvalidInputError, MissingPackageError
from ..weights.loader import parse_device
from ..weights.reader import TensorSource, open_tensors
from ..weights.storage import parse_dtype
from .build import CLIP_LAYOUT, LLAMA_LAYOUT, check_materialized, fill, find_prefix, module_prefix
from .clip import ClipTower
from .configs import (clip_config_from_folder, open_model_folder, clip_config_from_shapes, llama_config_from_folder,
                      llama_config_from_shapes)
from .encoder import EncoderInfo, TextEncoder
from .llm import DEFAULT_SKIP_LAYERS, LlamaTower, drop_final_layers
from .precision import fp8_storage_dtype, resolve_storage, use_casting_linears
from .tokenizer_files import load_clip_tokenizer, load_llama_tokenizer, pad_token_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Located:
    weights: TensorSource
    config_folder: Path | None
    tokenizer_candidates: list[tuple[str, Path | None]]


def load_text_encoder(llm, clip, tokenizer=None, clip_tokenizer=None, dtype: torch.dtype | None = None,
                      device=None, offload_device="cpu", llm_storage: str = "auto",
                      llm_config=None, clip_config=None,
                      hidden_state_skip_layer: int = DEFAULT_SKIP_LAYERS, cache_size: int = 16,
                      vision=None, vision_config=None) -> TextEncoder:
    """Load both towers (and the vision tower when `vision` is given) onto `offload_device`;
    `encode` runs them on `device`.

    dtype: compute dtype, a torch dtype or a name ('fp16', 'half', 'bf16', 'fp32', ...; default fp16 on
        CUDA as the reference, fp32 on CPU).
    llm_storage: 'auto' (fp8 files stay fp8, others in dtype), 'compute', 'fp8_e4m3fn', 'fp8_e5m2'.
    llm_config / clip_config / vision_config: a transformers config, or a dict of overrides for the built one.
    vision: None (text only), the LLaVA folder, or ComfyUI's llava_llama3_vision.safetensors.
    """
    device = parse_device(device, "device") if device is not None else _default_device()
    offload_device = parse_device(offload_device, "offload_device")
    dtype = parse_dtype(dtype, "dtype") or (torch.float16 if device.type == "cuda" else torch.float32)
    if isinstance(hidden_state_skip_layer, bool) or not isinstance(hidden_state_skip_layer, int):
        raise InvalidInputError(f"hidden_state_skip_layer: expected a whole number, got {hidden_state_skip_layer!r}.")
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
        raise InvalidInputError(f"cache_size: expected a whole number >= 0 (0 = no cache), got {cache_size!r}.")
    storage = resolve_storage(llm_storage)
    llm_tower = load_llama_tower(llm, tokenizer, dtype, offload_device, storage, llm_config, hidden_state_skip_layer)
    clip_tower = load_clip_tower(clip, clip_tokenizer, dtype, offload_device, clip_config)
    vision_tower = None if vision is None else _load_vision(vision, llm_tower, dtype, offload_device, vision_config)
    info = EncoderInfo(llm_tower.source, clip_tower.source, str(llm_tower.tokenizer.name_or_path),
                       str(clip_tower.tokenizer.name_or_path), dtype, storage, str(device), str(offload_device),
                       vision_source=None if vision_tower is None else vision_tower.source)
    return TextEncoder(llm_tower, clip_tower, device, offload_device, info, cache_size=cache_size,
                       vision=vision_tower)


def _load_vision(vision, llm_tower: LlamaTower, dtype, device, config):
    """The vision tower, checked against the Llama it feeds (width, <image> token)."""
    from .i2v import double_return_id, image_token_id
    from .vision_loader import load_vision_tower

    tower = load_vision_tower(vision, dtype, device, config)
    if tower.hidden_size != llm_tower.hidden_size:
        raise CheckpointError(
            f"{tower.source}: the projector gives image tokens of width {tower.hidden_size}, the Llama "
            f"({llm_tower.source}) takes {llm_tower.hidden_size}: the vision file belongs to another model.")
    image_token_id(llm_tower, tower.image_token_id)
    double_return_id(llm_tower)
    return tower


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingPackageError("The text encoder needs `transformers`: pip install transformers") from exc
    return transformers


def load_llama_tower(llm, tokenizer, dtype, device, storage="auto", config=None,
                     skip_layers: int = DEFAULT_SKIP_LAYERS) -> LlamaTower:
    tf = _transformers()
    where = _locate(llm, tokenizer, "text_encoder", "tokenizer", "llm")
    source = where.weights
    prefix = find_prefix(source, LLAMA_LAYOUT)
    tok, tok_folder = load_llama_tokenizer(where.tokenizer_candidates)
    special = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    cfg = _config(config, tf.LlamaConfig, where.config_folder, llama_config_from_folder,
                  lambda over: llama_config_from_shapes(source.shapes(), prefix, {**special, **over}))
    if not 0 <= skip_layers < cfg.num_hidden_layers:
        raise InvalidInputError(f"hidden_state_skip_layer: {skip_layers} is outside 0..{cfg.num_hidden_layers - 1}.")
    pad = pad_token_id(tok)
    _check_vocab(tok, pad, cfg.vocab_size, tok_folder, source.name)
    with torch.device("meta"):
        model = tf.LlamaModel(cfg)
    kept = len(model.layers) - skip_layers
    drop_final_layers(model, skip_layers)
    use_casting_linears(model.layers)
    fp8 = fp8_storage_dtype(storage, source.dtype(prefix + LLAMA_LAYOUT.anchor))
    fill(model, source, prefix, dtype, device, fp8, is_unused=_LayersFrom(kept))
    # The reference casts the whole model with `.to(fp16)`, which rounds RoPE's inv_freq buffer
    # to fp16 as well (the rotary forward then upcasts it); doing the same keeps its numerics.
    model.rotary_emb = type(model.rotary_emb)(config=model.config).to(device=device, dtype=dtype)
    check_materialized(model, source.name)
    log.info("Llama text encoder: %s, %d of %d layers, %s%s, tokenizer %s", source.name, kept,
             kept + skip_layers, dtype, f", linears in {fp8}" if fp8 else "", tok_folder)
    return LlamaTower(model, tok, pad, source=source.name)


class _LayersFrom:
    """True for checkpoint names (without prefix) that the truncated Llama never needs."""

    def __init__(self, first_unused_layer: int):
        self.first = first_unused_layer

    def __call__(self, name: str) -> bool:
        if name == "norm.weight" or name.startswith("lm_head.") or name.endswith("rotary_emb.inv_freq"):
            return True
        m = re.match(r"layers\.(\d+)\.", name)
        return bool(m) and int(m.group(1)) >= self.first


def load_clip_tower(clip, tokenizer, dtype, device, config=None) -> ClipTower:
    tf = _transformers()
    where = _locate(clip, tokenizer, "text_encoder_2", "tokenizer_2", "clip")
    source = where.weights
    prefix = find_prefix(source, CLIP_LAYOUT)
    tok, tok_folder = load_clip_tokenizer(where.tokenizer_candidates)
    built = where.config_folder is None and not isinstance(config, tf.CLIPTextConfig)
    special = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": pad_token_id(tok)}
    cfg = _config(config, tf.CLIPTextConfig, where.config_folder, clip_config_from_folder,
                  lambda over: clip_config_from_shapes(source.shapes(), prefix, {**special, **over}))
    _check_vocab(tok, pad_token_id(tok), cfg.vocab_size, tok_folder, source.name)
    _check_clip_eos(cfg, tok, tok_folder, built)
    with torch.device("meta"):
        model = tf.CLIPTextModel(cfg)
    inner = module_prefix(model, CLIP_LAYOUT)
    # Older exports store the position ids, which we rebuild below.
    fill(model, source, prefix, dtype, device, module_prefix=inner,
         is_unused=lambda name: name.endswith("embeddings.position_ids"))
    embeddings = model.get_submodule(inner + "embeddings")
    embeddings.position_ids = torch.arange(cfg.max_position_embeddings, device=device).expand(1, -1)
    check_materialized(model, source.name)
    log.info("CLIP text encoder: %s, %s, tokenizer %s", source.name, dtype, tok_folder)
    return ClipTower(model, tok, source=source.name)


def _config(config, config_class, folder, from_folder, from_shapes):
    if isinstance(config, config_class):
        return copy.deepcopy(config)  # the loader edits it (dropped layers, EOS id)
    if config is not None and not isinstance(config, Mapping):
        raise InvalidInputError(
            f"config: expected a {config_class.__name__} or a dict of overrides, got {type(config).__name__}.")
    return from_folder(folder, config) if folder is not None else from_shapes(dict(config or {}))


def _locate(path, tokenizer, subfolder: str, tokenizer_subfolder: str, argument: str) -> _Located:
    given = [("`tokenizer` argument" if argument == "llm" else "`clip_tokenizer` argument", tokenizer)]
    if isinstance(path, (str, os.PathLike)) and Path(path).expanduser().is_dir():
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file() and (folder / subfolder).is_dir():
            folder = folder / subfolder  # HunyuanVideo ckpts/ or a diffusers pipeline folder
        candidates = given + [("model folder", folder), (f"{tokenizer_subfolder}/ beside it",
                                                         folder.parent / tokenizer_subfolder)]
        return _Located(open_model_folder(folder), folder, candidates)
    if path is None:
        raise InvalidInputError(f"{argument}: no text encoder file or folder given.")
    return _Located(open_tensors(path), None, given)


def _check_vocab(tokenizer, pad: int, vocab_size: int, tok_folder: Path, source_name: str) -> None:
    largest = max(len(tokenizer) - 1, pad)
    if largest >= vocab_size:
        raise CheckpointError(
            f"{tok_folder}: the tokenizer has ids up to {largest}, but {source_name} embeds only "
            f"{vocab_size} tokens: this tokenizer belongs to another model.")


def _check_clip_eos(cfg, tokenizer, tok_folder: Path, built: bool) -> None:
    # eos_token_id 2 is transformers' legacy marker for "pool at the highest id" (CLIP's EOS
    # is its highest id); any other value must be the tokenizer's EOS or pooling reads the
    # wrong position.
    if not built and cfg.eos_token_id not in (2, tokenizer.eos_token_id):
        log.warning("%s: CLIP config eos_token_id %s differs from the tokenizer's EOS %s; using the "
                    "tokenizer's.", tok_folder, cfg.eos_token_id, tokenizer.eos_token_id)
        cfg.eos_token_id = tokenizer.eos_token_id
