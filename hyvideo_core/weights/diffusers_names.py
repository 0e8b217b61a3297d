"""Official HunyuanVideo names <-> diffusers `HunyuanVideoTransformer3DModel` names (SPEC 2).

Most tensors rename one to one. Three kinds do not:
- fused qkv (double-block img/txt, refiner) = diffusers q, k, v stacked by rows;
- single-block linear1 = diffusers q, k, v, proj_mlp stacked by rows;
- final_layer.adaLN_modulation.1 = diffusers norm_out.linear with its two row halves swapped
  (official order is [shift; scale], diffusers' is [scale; shift]).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_TOP = {
    "img_in.proj": "x_embedder.proj",
    "time_in.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "guidance_in.mlp.0": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.mlp.2": "time_text_embed.guidance_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
}
_REFINER = {
    "norm1": "norm1", "norm2": "norm2", "self_attn_proj": "attn.to_out.0",
    "mlp.fc1": "ff.net.0.proj", "mlp.fc2": "ff.net.2", "adaLN_modulation.1": "norm_out.linear",
    "self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
}
_DOUBLE = {
    "img_mod.linear": "norm1.linear", "txt_mod.linear": "norm1_context.linear",
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "img_attn_q_norm": "attn.norm_q", "img_attn_k_norm": "attn.norm_k",
    "txt_attn_q_norm": "attn.norm_added_q", "txt_attn_k_norm": "attn.norm_added_k",
    "img_attn_proj": "attn.to_out.0", "txt_attn_proj": "attn.to_add_out",
    "img_mlp.fc1": "ff.net.0.proj", "img_mlp.fc2": "ff.net.2",
    "txt_mlp.fc1": "ff_context.net.0.proj", "txt_mlp.fc2": "ff_context.net.2",
}
_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear2": "proj_out",
    "q_norm": "attn.norm_q", "k_norm": "attn.norm_k", "modulation.linear": "norm.linear",
}
_GROUPS = (
    (re.compile(r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.(.+)"), "context_embedder.token_refiner.refiner_blocks.{}.", _REFINER),
    (re.compile(r"double_blocks\.(\d+)\.(.+)"), "transformer_blocks.{}.", _DOUBLE),
    (re.compile(r"single_blocks\.(\d+)\.(.+)"), "single_transformer_blocks.{}.", _SINGLE),
)


@dataclass(frozen=True)
class DiffusersParts:
    """How one official module maps to diffusers: its part modules (stacked by rows)."""

    modules: tuple[str, ...]
    swap_halves: bool = False

    @property
    def fused(self) -> bool:
        return len(self.modules) > 1


def diffusers_parts(official_module: str) -> DiffusersParts | None:
    """Diffusers module name(s) for an official module path (no .weight/.bias suffix)."""
    if official_module in _TOP:
        return DiffusersParts((_TOP[official_module],), official_module == "final_layer.adaLN_modulation.1")
    for pattern, prefix, table in _GROUPS:
        m = pattern.fullmatch(official_module)
        if m and m.group(2) in table:
            target = table[m.group(2)]
            names = target if isinstance(target, tuple) else (target,)
            return DiffusersParts(tuple(prefix.format(m.group(1)) + n for n in names))
    return None


def split_module_key(key: str) -> tuple[str, str]:
    """'a.b.weight' -> ('a.b', 'weight')."""
    module, _, leaf = key.rpartition(".")
    return module, leaf


def row_sizes(official_module: str, rows: int, hidden: int) -> list[int]:
    """Row split of a fused tensor: equal thirds for qkv, [D, D, D, rest] for linear1."""
    if official_module.endswith("linear1"):
        return [hidden, hidden, hidden, rows - 3 * hidden]
    return [rows // 3] * 3


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def to_diffusers(state_dict: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """Convert an official state dict to diffusers names (used for export and tests)."""
    out = {}
    for key, tensor in state_dict.items():
        module, leaf = split_module_key(key)
        parts = diffusers_parts(module)
        if parts is None:
            raise KeyError(f"no diffusers name for official key '{key}'")
        if parts.swap_halves:
            tensor = swap_halves(tensor)
        if parts.fused:
            chunks = tensor.split(row_sizes(module, tensor.shape[0], hidden), dim=0)
            out.update({f"{name}.{leaf}": c.clone() for name, c in zip(parts.modules, chunks)})
        else:
            out[f"{parts.modules[0]}.{leaf}"] = tensor
    return out


def _inverse_tables():
    top = {d: (o, 0, 1) for o, d in _TOP.items()}
    groups = []
    for pattern, prefix, table in _GROUPS:
        official_prefix = pattern.pattern.split("(")[0].replace("\\.", ".")
        inverse = {}
        for official, target in table.items():
            names = target if isinstance(target, tuple) else (target,)
            for i, name in enumerate(names):
                inverse[name] = (official, i, len(names))
        groups.append((re.compile(re.escape(prefix).replace(r"\{\}", r"(\d+)") + r"(.+)"), official_prefix, inverse))
    return top, groups


_INV_TOP, _INV_GROUPS = _inverse_tables()


def official_module_of(diffusers_module: str) -> tuple[str, int, int] | None:
    """(official module, part index, number of parts) for a diffusers module name, or None."""
    if diffusers_module in _INV_TOP:
        return _INV_TOP[diffusers_module]
    for pattern, official_prefix, inverse in _INV_GROUPS:
        m = pattern.fullmatch(diffusers_module)
        if m and m.group(2) in inverse:
            official, index, count = inverse[m.group(2)]
            return f"{official_prefix}{m.group(1)}.{official}", index, count
    return None
