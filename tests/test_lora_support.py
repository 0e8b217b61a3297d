"""Helpers for the LoRA tests: a known LoRA (A, B, alpha per official module) written out in every
file format in circulation. The writers follow SPEC 8 key by key; the diffusers file is written by
diffusers itself (`HunyuanVideoPipeline.save_lora_weights`), an independent writer."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import hyvideo_core
from hyvideo_core.model.ops import casting_layers
from hyvideo_core.weights.comfy_names import official_to_comfy
from hyvideo_core.weights.diffusers_names import diffusers_parts, row_sizes, swap_halves

from conftest import golden_path

RANK = 4


@dataclass(frozen=True)
class Known:
    down: torch.Tensor   # A [r, in, *k]
    up: torch.Tensor     # B [out, r, 1...]
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / self.down.shape[0]

    def delta(self) -> torch.Tensor:
        product = self.up.flatten(1).double() @ self.down.flatten(1).double()
        return (product * self.scale).float().reshape(self.up.shape[0], *self.down.shape[1:])


def tiny_dit():
    return hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config="tiny",
                                         dtype=torch.float32, attention="sdpa")


def known_lora(model, modules=None, rank: int = RANK, seed: int = 0, alpha: float = 8.0,
               special_alpha: dict | None = None) -> dict[str, Known]:
    """Random A/B for the given official modules (default: every Linear/Conv3d of the model)."""
    g = torch.Generator().manual_seed(seed)
    layers = dict(casting_layers(model))
    out = {}
    for name in modules or list(layers):
        w = layers[name].weight
        kernel = tuple(w.shape[2:])
        down = torch.randn(rank, *w.shape[1:], generator=g) / math.sqrt(w[0].numel())
        up = torch.randn(w.shape[0], rank, *([1] * len(kernel)), generator=g) * 0.05
        out[name] = Known(down, up, (special_alpha or {}).get(name, alpha))
    return out


def inputs(batch: int = 1, frames: int = 3, size: int = 8, channels: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, frames, size, size, generator=g)
    text = torch.randn(batch, 5, 64, generator=g)
    pooled = torch.randn(batch, 32, generator=g)
    return x, torch.full((batch,), 700.0), text, None, pooled, torch.full((batch,), 6000.0)


# -- writers ----------------------------------------------------------------------------------
def comfy_module(module: str) -> str:
    return official_to_comfy(module + ".weight")[: -len(".weight")]


def write_named(known: dict[str, Known], path: Path, *, prefix: str, names=lambda m: m,
                down="lora_down.weight", up="lora_up.weight", alpha: bool = True) -> Path:
    """Official / ComfyUI-internal / kohya names: one A and one B per official module (fused
    modules keep their shared A, SPEC 8.3-8.4). Without alpha tensors the scale is folded into
    A and B as sqrt(scale) each (musubi's `--target other`)."""
    sd = {}
    for module, k in known.items():
        stem = prefix + names(module)
        if alpha:
            sd[f"{stem}.{down}"], sd[f"{stem}.{up}"] = k.down, k.up
            sd[f"{stem}.alpha"] = torch.tensor(k.alpha)
        else:
            root = math.sqrt(k.scale)
            sd[f"{stem}.{down}"], sd[f"{stem}.{up}"] = k.down * root, k.up * root
    save_file(sd, str(path))
    return path


def write_kohya(known, path: Path) -> Path:
    return write_named(known, path, prefix="lora_unet_", names=lambda m: m.replace(".", "_"))


def write_kohya_comfy(known, path: Path) -> Path:
    return write_named(known, path, prefix="lora_unet_", names=lambda m: comfy_module(m).replace(".", "_"))


def write_comfy_internal(known, path: Path) -> Path:
    return write_named(known, path, prefix="diffusion_model.", names=comfy_module,
                       down="lora_A.weight", up="lora_B.weight")


def write_diffusion_pipe(known, path: Path) -> Path:
    return write_named(known, path, prefix="transformer.", down="lora_A.weight", up="lora_B.weight", alpha=False)


def diffusers_layers(known: dict[str, Known], hidden: int, fold_scale: bool) -> dict[str, torch.Tensor]:
    """diffusers module names: fused modules get A duplicated and B split by rows; the final
    layer's B has its halves swapped (SPEC 8.1)."""
    sd = {}
    for module, k in known.items():
        parts = diffusers_parts(module)
        up = k.up * k.scale if fold_scale else k.up
        if parts.swap_halves:
            up = swap_halves(up)
        ups = up.split(row_sizes(module, up.shape[0], hidden)) if parts.fused else (up,)
        for name, piece in zip(parts.modules, ups):
            sd[f"{name}.lora_A.weight"] = k.down.clone()
            sd[f"{name}.lora_B.weight"] = piece.clone()
    return sd


def write_diffusers(known, folder: Path, hidden: int, metadata: bool) -> Path:
    from diffusers import HunyuanVideoPipeline
    layers = diffusers_layers(known, hidden, fold_scale=not metadata)
    meta = None
    if metadata:
        alphas = {k.alpha for k in known.values()}
        common = max(alphas, key=lambda a: sum(k.alpha == a for k in known.values()))
        pattern = {}
        for module, k in known.items():
            if k.alpha != common:
                pattern.update({name: k.alpha for name in diffusers_parts(module).modules})
        meta = {"r": RANK, "lora_alpha": common, "alpha_pattern": pattern, "use_rslora": False}
    HunyuanVideoPipeline.save_lora_weights(str(folder), transformer_lora_layers=layers,
                                           transformer_lora_adapter_metadata=meta)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def dit():
    return tiny_dit()
