"""`load_vision_tower`: the LLaVA vision tower + projector files users have -> a VisionTower.

Accepted (SPEC_NEXT.md 2.7):
- the whole llava-llama-3-8b-v1_1-transformers folder (HunyuanVideo-I2V's `text_encoder_i2v`,
  LlavaForConditionalGeneration: vision_tower.vision_model.*, multi_modal_projector.*,
  language_model.*; config.json and preprocessor_config.json are read), or a folder holding
  `text_encoder_i2v/`;
- ComfyUI's clip_vision/llava_llama3_vision.safetensors (vision_model.* and
  multi_modal_projector.*, no config: CLIP ViT-L/14-336 constants, sizes from the shapes).
Every tensor of the vision part is used or unused by design; anything else is an error.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError, InvalidInputError, UnknownFormatError
from ..weights.identify import describe
from ..weights.reader import TensorSource, open_tensors
from .build import TowerLayout, check_materialized, fill, module_prefix
from .configs import count_layers, open_model_folder, read_folder_config
from .vision import (DEFAULT_FEATURE_LAYER, DEFAULT_SELECT_STRATEGY, VisionModules, VisionTower, clip_processor,
                     keep_layers)

log = logging.getLogger(__name__)

VISION_LAYOUT = TowerLayout("CLIP vision", "encoder.layers.0.mlp.fc1.weight", "embeddings.patch_embedding.weight",
                            "vision")
PROJECTOR = "multi_modal_projector."
PROJECTOR_ANCHOR = PROJECTOR + "linear_1.weight"

# llava-llama-3-8b-v1_1's vision tower (ComfyUI's clip_vision_config_vitl_336_llava.json).
CLIP_VIT_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=336, patch_size=14, num_channels=3, hidden_act="quick_gelu",
                      layer_norm_eps=1e-5, projection_dim=768)
VISION_HEAD_DIM = 64
# Present in the files, never needed for the penultimate-layer patch features.
_UNUSED_BESIDE = re.compile(r"^(visual_projection\.weight|logit_scale)$")
_FOLDER_SUBDIR = "text_encoder_i2v"
_EXPECTED = ("the llava-llama-3-8b-v1_1-transformers folder (HunyuanVideo-I2V's text_encoder_i2v) or "
             "ComfyUI's clip_vision/llava_llama3_vision.safetensors")


def load_vision_tower(vision, dtype: torch.dtype, device, config=None) -> VisionTower:
    """vision: a LLaVA folder or ComfyUI's llava_llama3_vision.safetensors.
    config: a CLIPVisionConfig, or a dict of overrides for the built/read one."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    folder = _folder(vision)
    source = _open(folder, vision)
    raw = read_folder_config(folder) if folder is not None else {}
    prefix = _find_prefix(source)
    proj = _projector_prefix(source)
    cfg = _vision_config(raw, source, prefix, config, CLIPVisionConfig)
    settings = _llava_settings(raw)
    keep = keep_layers(cfg.num_hidden_layers, settings["feature_layer"])

    with torch.device("meta"):
        tower = CLIPVisionModel(cfg)
        projector = _projector(cfg, source, proj, settings["projector_act"])
    inner = module_prefix(tower, VISION_LAYOUT)
    encoder = tower.get_submodule(inner + "encoder")
    del encoder.layers[keep:]
    owner = tower.get_submodule(inner[:-1]) if inner else tower
    owner.post_layernorm = nn.Identity()  # only the pooled CLS output uses it

    def by_design(name: str) -> bool:
        m = re.match(r"encoder\.layers\.(\d+)\.", name)
        return (bool(m) and int(m.group(1)) >= keep) or name.startswith("post_layernorm.") \
            or name.endswith("position_ids")

    report = fill(tower, source, prefix, dtype, device, module_prefix=inner, is_unused=by_design)
    proj_report = fill(projector, source, proj, dtype, device)
    embeddings = tower.get_submodule(inner + "embeddings")
    embeddings.position_ids = torch.arange(embeddings.num_positions, device=device).expand(1, -1)
    check_materialized(tower, source.name)
    check_materialized(projector, source.name)
    _check_leftovers(source, folder is not None, prefix, proj, report, proj_report, by_design)

    processor = clip_processor(cfg.image_size, folder)
    out = VisionTower(VisionModules(tower, projector), processor, source=source.name,
                      select_strategy=settings["select_strategy"], image_token_id=settings["image_token_id"])
    log.info("Vision tower: %s, %d of %d layers, %d image tokens of width %d, %s", source.name, keep,
             cfg.num_hidden_layers, out.patches, out.hidden_size, dtype)
    return out


def _folder(vision) -> Path | None:
    if vision is None:
        raise InvalidInputError(f"vision: no vision tower file or folder given; expected {_EXPECTED}.")
    if isinstance(vision, (str, os.PathLike)) and Path(vision).expanduser().is_dir():
        folder = Path(vision).expanduser()
        if not (folder / "config.json").is_file() and (folder / _FOLDER_SUBDIR).is_dir():
            folder = folder / _FOLDER_SUBDIR
        return folder
    return None


def _open(folder: Path | None, vision) -> TensorSource:
    if folder is None:
        return open_tensors(vision)
    return open_model_folder(folder)


def _find_prefix(source: TensorSource) -> str:
    for key in source.keys():
        if key.endswith(VISION_LAYOUT.anchor):
            prefix = key[: -len(VISION_LAYOUT.anchor)]
            if f"{prefix}{VISION_LAYOUT.marker}" in source:
                return prefix
    raise UnknownFormatError(
        f"{source.name}: not a CLIP vision tower: it looks like {describe(source.keys())} (no "
        f"'...{VISION_LAYOUT.anchor}' with '...{VISION_LAYOUT.marker}'). Expected for `vision`: {_EXPECTED}.")


def _projector_prefix(source: TensorSource) -> str:
    found = [k[: -len("linear_1.weight")] for k in source.keys() if k.endswith(PROJECTOR_ANCHOR)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise CheckpointError(
            f"{source.name}: has {what} LLaVA projector ('...{PROJECTOR_ANCHOR}'): a plain CLIP vision "
            f"file (e.g. clip_vision_vit_h or clip_vision_l) cannot feed the Llama. Expected {_EXPECTED}.")
    return found[0]


def _vision_config(raw: Mapping, source: TensorSource, prefix: str, config, config_class):
    if isinstance(config, config_class):
        return copy.deepcopy(config)
    if config is not None and not isinstance(config, Mapping):
        raise InvalidInputError(
            f"vision_config: expected a {config_class.__name__} or a dict of overrides, got {type(config).__name__}.")
    overrides = dict(config or {})
    folder_cfg = dict(raw.get("vision_config") or {}) if raw else {}
    if raw and not folder_cfg:
        if raw.get("model_type") == "clip_vision_model":
            folder_cfg = dict(raw)
        else:
            raise CheckpointError(
                f"{source.name}: config.json has no vision_config (model_type {raw.get('model_type')!r}); "
                f"expected a LLaVA config. Expected for `vision`: {_EXPECTED}.")
    shapes = source.shapes()
    hidden, channels, patch, _ = shapes[f"{prefix}embeddings.patch_embedding.weight"]
    positions = shapes[f"{prefix}embeddings.position_embedding.weight"][0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise CheckpointError(
            f"{source.name}: {positions} position embeddings is not 1 + a square patch grid; not a CLIP ViT.")
    measured = dict(
        hidden_size=hidden, num_channels=channels, patch_size=patch, image_size=grid * patch,
        num_hidden_layers=count_layers(shapes, rf"^{re.escape(prefix)}encoder\.layers\.(\d+)\."),
        intermediate_size=shapes[f"{prefix}encoder.layers.0.mlp.fc1.weight"][0],
    )
    heads = folder_cfg.get("num_attention_heads") or max(1, hidden // VISION_HEAD_DIM)
    values = {**CLIP_VIT_L_336, **folder_cfg, **measured, "num_attention_heads": heads, **overrides}
    values.pop("model_type", None)
    return config_class(**values)


def _llava_settings(raw: Mapping) -> dict:
    layer = raw.get("vision_feature_layer", DEFAULT_FEATURE_LAYER)
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise CheckpointError(
            f"config.json: vision_feature_layer {layer!r}; only a single layer (llava-llama-3's -2) is supported.")
    strategy = raw.get("vision_feature_select_strategy", DEFAULT_SELECT_STRATEGY)
    if strategy not in ("default", "full"):
        raise CheckpointError(f"config.json: vision_feature_select_strategy {strategy!r} is not 'default' or 'full'.")
    token = raw.get("image_token_index", raw.get("image_token_id"))
    return {"feature_layer": layer, "select_strategy": strategy, "image_token_id": token,
            "projector_act": raw.get("projector_hidden_act", "gelu")}


def _projector(cfg, source: TensorSource, proj: str, act: str) -> nn.Module:
    from transformers import LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    shapes = source.shapes()
    out_dim, in_dim = shapes[f"{proj}linear_2.weight"][0], shapes[f"{proj}linear_1.weight"][1]
    if in_dim != cfg.hidden_size:
        raise CheckpointError(
            f"{source.name}: the projector takes {in_dim} features, the vision tower gives {cfg.hidden_size}.")
    llava = LlavaConfig(vision_config=cfg.to_dict(), text_config={"model_type": "llama", "hidden_size": out_dim},
                        projector_hidden_act=act, vision_feature_layer=DEFAULT_FEATURE_LAYER,
                        multimodal_projector_bias=f"{proj}linear_1.bias" in source)
    return LlavaMultiModalProjector(llava)


def _check_leftovers(source: TensorSource, is_folder: bool, prefix: str, proj: str, report, proj_report,
                     by_design) -> None:
    """Nothing of the vision part is silently ignored: a tensor the tower and projector do not
    use, and that is not unused by design, is an error naming the file."""
    leftover = set(proj_report.unused) & set(report.unused)  # keys neither fill consumed
    root = prefix[: -len("vision_model.")] if prefix.endswith("vision_model.") else prefix
    bad = list(report.unexpected) + list(proj_report.unexpected)
    for key in sorted(leftover):
        if key.startswith(prefix) and by_design(key[len(prefix):]):
            continue
        if is_folder and not key.startswith(root):
            continue  # the language model of a LLaVA folder (loaded by the Llama tower)
        elif not _UNUSED_BESIDE.match(key[len(root):] if key.startswith(root) else key):
            bad.append(key)
    if bad:
        raise CheckpointError(
            f"{source.name}: {len(bad)} tensors of the vision tower file match nothing in CLIP ViT + LLaVA "
            f"projector, e.g. {sorted(bad)[:6]}. The file has another layout; expected {_EXPECTED}.")
