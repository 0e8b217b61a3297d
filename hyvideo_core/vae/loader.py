"""load_vae: the HunyuanVideo VAE from any of its published layouts.

Accepted: the official state dict (Tencent `vae/pytorch_model.pt`, possibly nested in
`state_dict` and/or prefixed `vae.`), Comfy-Org's `hunyuan_video_vae_bf16.safetensors` (official
names), a checkpoint bundling the VAE under a prefix (only that part is read), and diffusers
`AutoencoderKLHunyuanVideo` folders or files (the same key names; the folder's config.json is
used). The layout is recognised from keys and shapes, never from the file name.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, UnknownFormatError
from ..weights.identify import describe
from ..weights.key_check import key_mismatches
from ..weights.loader import parse_device
from ..weights.reader import TensorSource, check_finite, open_tensors
from ..weights.storage import parse_dtype
from .config import VAEConfig, config_from_dict, infer_config, resolve_config
from .vae import HunyuanVideoVAE

log = logging.getLogger(__name__)

ANCHOR = "decoder.conv_in.conv.weight"


@dataclass
class VAELoadReport:
    source: str
    prefix: str
    ignored_keys: int
    has_encoder: bool
    dtype: torch.dtype
    config_from: str


def load_vae(source, *, config=None, dtype=None, device="cpu") -> HunyuanVideoVAE:
    """A ready (eval, no grad) HunyuanVideoVAE.

    source: a file, a folder (diffusers `vae/` or a pipeline folder holding one, or the Tencent
    `vae/` folder), a state dict or a TensorSource. config: None (folder config.json, else from
    shapes), a VAEConfig, a preset name or a constructor-arguments dict (golden config.json as is).
    dtype: None keeps the file's dtype; else a torch dtype or a name ("fp32", "bf16", "fp16", "half",
    ...: weights.storage.parse_dtype). Every tensor is checked for NaN/inf as it is read.
    """
    requested = parse_dtype(dtype, "load_vae: dtype")
    device = parse_device(device, "load_vae: device")
    tensors, folder_config, name = _open(source)
    prefix = _find_prefix(tensors, name)
    keys = {k[len(prefix):]: k for k in tensors.keys() if k.startswith(prefix)}
    shapes = {k: tuple(tensors.shape(full)) for k, full in keys.items()}
    _reject_other_layouts(shapes, name)
    explicit = resolve_config(config)
    chosen = explicit or folder_config or infer_config(shapes)
    origin = "argument" if explicit else "config.json" if folder_config else "tensor shapes"
    has_encoder = any(k.startswith("encoder.") for k in shapes)
    if not has_encoder:
        log.warning("%s: no encoder weights; loaded the decoder only (encode is unavailable).", name)
    with torch.device("meta"):
        model = HunyuanVideoVAE(chosen, with_encoder=has_encoder)
    _check_shapes(model, shapes, name, origin)
    target = requested or tensors.dtype(keys[ANCHOR])
    if target not in (torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(f"{name}: '{keys[ANCHOR]}' is stored as {target}, not a float dtype; the VAE file is "
                              "not usable as is (pass dtype='fp32' to convert it, or download it again).")
    state = {k: _finite(tensors, keys[k], name).to(device=device, dtype=target) for k in model.state_dict()}
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.eval().requires_grad_(False)
    ignored = len(tensors) - len(keys)
    if ignored:
        log.info("%s: read the VAE under prefix %r; %d other tensors were not loaded.", name, prefix, ignored)
    model.load_report = VAELoadReport(name, prefix, ignored, has_encoder, target, origin)
    return model


def _finite(tensors: TensorSource, key: str, name: str) -> torch.Tensor:
    """The tensor, checked for NaN/inf as it is read (a sum per tensor; see reader.check_finite)."""
    tensor = tensors.get(key)
    check_finite(tensor, key, name)
    return tensor


def _open(source) -> tuple[TensorSource, VAEConfig | None, str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source)).expanduser()
        if path.is_dir():
            return _open_folder(path)
        return open_tensors(path), _sibling_config(path), str(path)
    tensors = open_tensors(source)
    return tensors, None, tensors.name


def _open_folder(path: Path) -> tuple[TensorSource, VAEConfig | None, str]:
    if (path / "vae").is_dir() and not _weight_files(path):
        path = path / "vae"  # a diffusers pipeline folder, or Tencent's ckpts/<model>/
    config = _read_config(path / "config.json")
    if list(path.glob("*.safetensors")):
        return open_tensors(path), config, str(path)
    files = _weight_files(path)
    if len(files) != 1:
        raise CheckpointError(
            f"{path}: expected the VAE weights in this folder (a .safetensors file, or one "
            f"pytorch_model.pt), found {[f.name for f in files] or 'none'}. Give the file itself.")
    return open_tensors(files[0]), config, str(files[0])


def _weight_files(path: Path) -> list[Path]:
    return sorted(f for pattern in ("*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt") for f in path.glob(pattern))


def _sibling_config(path: Path) -> VAEConfig | None:
    """Tencent's vae/ and diffusers' vae/ folders keep config.json beside the weights."""
    if path.name not in ("pytorch_model.pt", "diffusion_pytorch_model.safetensors"):
        return None
    return _read_config(path.parent / "config.json")


def _read_config(path: Path) -> VAEConfig | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable config.json ({exc}).") from exc
    if "latent_channels" not in data:
        raise CheckpointError(
            f"{path}: this config.json does not describe a VAE (no latent_channels); the folder "
            "is probably not the VAE folder.")
    return config_from_dict(data)


def _find_prefix(tensors: TensorSource, name: str) -> str:
    prefixes = sorted((k[: -len(ANCHOR)] for k in tensors.keys() if k.endswith(ANCHOR)), key=len)
    prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
    if prefixes:
        return prefixes[0]
    keys = tensors.keys()
    if any(k.endswith("decoder.conv_in.weight") for k in keys):
        what = "a 2D image VAE (e.g. Stable Diffusion / Flux)"
    else:
        what = describe(keys)
    raise UnknownFormatError(
        f"{name}: this file is {what}, not the HunyuanVideo 3D VAE (no '{ANCHOR}' tensor among "
        f"its {len(keys)} tensors). Choose the VAE file: hunyuan_video_vae_bf16.safetensors "
        "(ComfyUI/models/vae) or Tencent's hunyuan-video-t2v-720p/vae/pytorch_model.pt.")


def _reject_other_layouts(shapes: dict, name: str) -> None:
    if any(".mid.block_1." in k or k.startswith("decoder.up.") for k in shapes):
        raise UnknownFormatError(
            f"{name}: the VAE is stored in ComfyUI's internal (LDM) key layout "
            "(decoder.mid.block_1 / decoder.up.N), which is not supported; use the original "
            "hunyuan_video_vae_bf16.safetensors or Tencent's pytorch_model.pt.")
    if len(shapes[ANCHOR]) != 5:
        raise UnknownFormatError(
            f"{name}: '{ANCHOR}' has shape {list(shapes[ANCHOR])}; the HunyuanVideo VAE has 5-D "
            "(3D conv) weights. This is a different VAE.")


def _check_shapes(model: HunyuanVideoVAE, shapes: dict, name: str, origin: str) -> None:
    problems = key_mismatches({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes, examples=3)
    if problems:
        raise CheckpointError(
            f"{name}: the VAE tensors do not match the architecture taken from the {origin}: "
            + "; ".join(problems) + ". The file is truncated or a different model, or the config does "
            "not belong to it (pass the matching config=, or none to read it from the shapes).")
