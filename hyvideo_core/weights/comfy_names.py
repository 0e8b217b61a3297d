"""ComfyUI's internal HunyuanVideo names (Flux-style) <-> the official Tencent names.

ComfyUI renames official keys with plain substring replacements when it loads a checkpoint;
Comfy-Org's repackaged files and ComfyUI LoRAs may carry the renamed form. The rules, in the
order ComfyUI applies them (official fragment -> ComfyUI fragment):
"""
from __future__ import annotations


RULES: tuple[tuple[str, str], ...] = (
    ("txt_in.t_embedder.mlp.0.", "txt_in.t_embedder.in_layer."),
    ("txt_in.t_embedder.mlp.2.", "txt_in.t_embedder.out_layer."),
    ("txt_in.c_embedder.linear_1.", "txt_in.c_embedder.in_layer."),
    ("txt_in.c_embedder.linear_2.", "txt_in.c_embedder.out_layer."),
    ("_mod.linear.", "_mod.lin."),
    ("_attn_qkv.", "_attn.qkv."),
    ("mlp.fc1.", "mlp.0."),
    ("mlp.fc2.", "mlp.2."),
    ("_attn_q_norm.weight", "_attn.norm.query_norm.scale"),
    ("_attn_k_norm.weight", "_attn.norm.key_norm.scale"),
    (".q_norm.weight", ".norm.query_norm.scale"),
    (".k_norm.weight", ".norm.key_norm.scale"),
    ("_attn_proj.", "_attn.proj."),
    (".modulation.linear.", ".modulation.lin."),
    ("_in.mlp.2.", "_in.out_layer."),
    ("_in.mlp.0.", "_in.in_layer."),
)


def official_to_comfy(key: str) -> str:
    for official, comfy in RULES:
        key = key.replace(official, comfy)
    return key


# ComfyUI fragment -> official fragment, in an order that undoes RULES without ambiguity:
# block MLP indices first, then the embedders whose official names contain "mlp.0/2".
_REVERSE: tuple[tuple[str, str], ...] = (
    ("mlp.0.", "mlp.fc1."),
    ("mlp.2.", "mlp.fc2."),
    ("txt_in.t_embedder.in_layer.", "txt_in.t_embedder.mlp.0."),
    ("txt_in.t_embedder.out_layer.", "txt_in.t_embedder.mlp.2."),
    ("txt_in.c_embedder.in_layer.", "txt_in.c_embedder.linear_1."),
    ("txt_in.c_embedder.out_layer.", "txt_in.c_embedder.linear_2."),
    ("time_in.in_layer.", "time_in.mlp.0."),
    ("time_in.out_layer.", "time_in.mlp.2."),
    ("guidance_in.in_layer.", "guidance_in.mlp.0."),
    ("guidance_in.out_layer.", "guidance_in.mlp.2."),
    ("_mod.lin.", "_mod.linear."),
    ("_attn.qkv.", "_attn_qkv."),
    ("_attn.norm.query_norm.scale", "_attn_q_norm.weight"),
    ("_attn.norm.key_norm.scale", "_attn_k_norm.weight"),
    (".norm.query_norm.scale", ".q_norm.weight"),
    (".norm.key_norm.scale", ".k_norm.weight"),
    ("_attn.proj.", "_attn_proj."),
    (".modulation.lin.", ".modulation.linear."),
)


def comfy_to_official_key(key: str) -> str | None:
    """The official name of a ComfyUI-internal key, or None if it is not one we can map back."""
    out = key
    for comfy, official in _REVERSE:
        out = out.replace(comfy, official)
    return out if official_to_comfy(out) == key else None
