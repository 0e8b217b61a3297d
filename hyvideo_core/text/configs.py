"""transformers configs for the two towers: read from a Hugging Face folder, or built in code
for a single file (which carries no config), from the tensor shapes plus the known
architecture constants (COMFYUI_HOST.md section 8, SPEC.md 4).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

from ..errors import CheckpointError

# LLaVA-Llama-3-8B's language model (ComfyUI hard-codes the same values).
LLAMA3_8B = dict(
    vocab_size=128320, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
    rms_norm_eps=1e-5, rope_theta=500000.0, attention_bias=False, mlp_bias=False,
    tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001, hidden_act="silu",
)
LLAMA_HEAD_DIM = 128

# openai/clip-vit-large-patch14 text tower.
CLIP_L = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
)
CLIP_HEAD_DIM = 64


def read_folder_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json; a Hugging Face model folder needs one.")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}).") from exc


def llama_config_from_folder(folder: Path, overrides: Mapping | None = None):
    from transformers import LlamaConfig

    raw = read_folder_config(folder)
    kind = raw.get("model_type")
    if kind == "llava" or "text_config" in raw:  # a whole LLaVA folder: the language model part
        raw = raw.get("text_config") or {}
        kind = raw.get("model_type", "llama")
    if kind != "llama":
        raise CheckpointError(
            f"{folder}/config.json: model_type {kind!r}; the HunyuanVideo text encoder is a Llama "
            "(llava-llama-3-8b text_encoder folder).")
    return LlamaConfig.from_dict({**raw, **dict(overrides or {})})


def clip_config_from_folder(folder: Path, overrides: Mapping | None = None):
    from transformers import CLIPTextConfig

    raw = read_folder_config(folder)
    kind = raw.get("model_type")
    if kind == "clip":
        raw = raw.get("text_config") or {}
    elif kind not in ("clip_text_model", None):
        raise CheckpointError(
            f"{folder}/config.json: model_type {kind!r}; expected a CLIP model (clip-vit-large-patch14).")
    return CLIPTextConfig.from_dict({**raw, **dict(overrides or {})})


def count_layers(shapes: Mapping[str, tuple], pattern: str) -> int:
    found = {int(m.group(1)) for k in shapes if (m := re.search(pattern, k))}
    return max(found) + 1 if found else 0


def llama_config_from_shapes(shapes: Mapping[str, tuple], prefix: str, overrides: Mapping | None = None):
    """LLaMA-3-8B constants, with every size the tensors reveal taken from the tensors."""
    from transformers import LlamaConfig

    overrides = dict(overrides or {})
    vocab, hidden = shapes[f"{prefix}embed_tokens.weight"]
    heads = overrides.get("num_attention_heads", max(1, hidden // LLAMA_HEAD_DIM))
    head_dim = overrides.get("head_dim", hidden // heads)
    measured = dict(
        vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads, head_dim=head_dim,
        num_hidden_layers=count_layers(shapes, rf"^{re.escape(prefix)}layers\.(\d+)\."),
        intermediate_size=shapes[f"{prefix}layers.0.mlp.gate_proj.weight"][0],
        num_key_value_heads=shapes[f"{prefix}layers.0.self_attn.k_proj.weight"][0] // head_dim,
        attention_bias=f"{prefix}layers.0.self_attn.q_proj.bias" in shapes,
    )
    return LlamaConfig(**{**LLAMA3_8B, **measured, **overrides})


def clip_config_from_shapes(shapes: Mapping[str, tuple], prefix: str, overrides: Mapping | None = None):
    from transformers import CLIPTextConfig

    overrides = dict(overrides or {})
    vocab, hidden = shapes[f"{prefix}embeddings.token_embedding.weight"]
    measured = dict(
        vocab_size=vocab, hidden_size=hidden,
        max_position_embeddings=shapes[f"{prefix}embeddings.position_embedding.weight"][0],
        num_hidden_layers=count_layers(shapes, rf"^{re.escape(prefix)}encoder\.layers\.(\d+)\."),
        intermediate_size=shapes[f"{prefix}encoder.layers.0.mlp.fc1.weight"][0],
        num_attention_heads=max(1, hidden // CLIP_HEAD_DIM),
    )
    return CLIPTextConfig(**{**CLIP_L, **measured, **overrides})


def open_model_folder(folder: Path):
    """The weights of a Hugging Face model folder (safetensors, else pytorch_model*.bin shards)."""
    from ..weights.reader import ShardedSource, open_tensors
    if any(folder.glob("*.safetensors")):
        return open_tensors(folder)
    bins = sorted(folder.glob("*.bin"))
    if bins:
        return ShardedSource((open_tensors(f) for f in bins), name=str(folder))
    raise CheckpointError(f"{folder}: holds no weights (*.safetensors or pytorch_model*.bin).")
