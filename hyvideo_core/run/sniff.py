"""Check each model file's container, integrity and kind before any model loads.

`sniff_model_file(path, role, parameter=...)` reads headers and metadata only, never tensor data:
the JSON header of a safetensors file, the header and tensor table of a GGUF file, and the
pickle of a zip torch file (its storages memory-mapped, not read). It returns a `SniffedFile`,
or raises one of the engine's errors. The message names the parameter and the file, says what
was found and what to do:

- InvalidInputError: no such path, a folder where one model file is needed (or one shard / a
  JSON file where the folder is needed), a folder without the config.json its loader needs;
- CheckpointError: an empty, truncated or damaged file (safetensors header length, JSON header,
  GGUF magic or tensor table, torch zip), a legacy pickle .pt that cannot be memory-mapped;
- UnknownFormatError: an unsupported file type, or the wrong kind of model for the role (a VAE
  given as the DiT, a LoRA as the VAE, a Llama as CLIP, ...).

Each role accepts what its loader accepts, judged by the same key markers (see ACCEPTED).
"""
from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import CheckpointError, HyVideoError, InvalidInputError, MissingPackageError, UnknownFormatError
from ..text.build import CLIP_LAYOUT, LLAMA_LAYOUT, TowerLayout
from ..text.configs import count_layers
from ..vae.loader import ANCHOR as VAE_ANCHOR
from ..weights.dit_format import SIDECAR_KEYS, SIDECAR_SUFFIXES, DiTLayout, detect_layout
from ..weights.identify import describe
from ..weights.reader import ShardedSource, TensorSource, open_tensors, sniff

ROLES = ("dit", "vae", "llm", "clip", "lora")
NOUNS = {"dit": "the HunyuanVideo transformer (DiT)", "vae": "the HunyuanVideo 3D VAE",
         "llm": "the Llama text encoder", "clip": "the CLIP-L text encoder", "lora": "a HunyuanVideo LoRA"}
ACCEPTED = {
    "dit": "hunyuan_video_t2v_720p_bf16.safetensors (or its fp8 / GGUF versions, official, ComfyUI or "
           "diffusers names) in models/diffusion_models",
    "vae": "hunyuan_video_vae_bf16.safetensors in models/vae, Tencent's vae/pytorch_model.pt, or a "
           "diffusers vae folder",
    "llm": "llava_llama3_fp16.safetensors / llava_llama3_fp8_scaled.safetensors in models/text_encoders, "
           "or a llava-llama-3-8b text_encoder folder",
    "clip": "clip_l.safetensors in models/text_encoders, or a clip-vit-large-patch14 folder",
    "lora": "a LoRA trained for HunyuanVideo (diffusers/PEFT, kohya/musubi or ComfyUI names) in models/loras",
}
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".gguf", ".pt", ".pth", ".ckpt", ".bin")
_UNFINISHED = (".part", ".partial", ".crdownload", ".incomplete", ".download", ".tmp", ".aria2")
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.(safetensors|bin)$")
# Where a whole-pipeline folder keeps each role's model (HunyuanVideo ckpts/, diffusers pipelines).
_SUBFOLDER = {"dit": "transformer", "vae": "vae", "llm": "text_encoder", "clip": "text_encoder_2"}
_DTYPE_NAMES = {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                torch.float8_e4m3fn: "fp8_e4m3fn", torch.float8_e5m2: "fp8_e5m2"}


@dataclass(frozen=True)
class SniffedFile:
    path: Path
    role: str          # "dit" | "vae" | "llm" | "clip" | "lora"
    container: str     # "safetensors" | "gguf" | "pt" | "folder"
    what: str          # short human description, e.g. "HunyuanVideo DiT (official names), 856 tensors, bf16"
    tensors: int
    nbytes: int        # size on disk of the file, or of the folder's weight files


def sniff_model_file(path, role: str, *, parameter: str) -> SniffedFile:
    """Open `path` as far as its headers go and check it is a sound `role` model file."""
    if role not in ROLES:
        raise InvalidInputError(f"{parameter}: unknown model role {role!r}; expected one of {list(ROLES)}.")
    if path is None or str(path).strip() == "":
        raise InvalidInputError(f"{parameter}: no file given. Choose {ACCEPTED[role]}.")
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise InvalidInputError(f"{parameter}: {path}: no such file or folder.{_nearby(path)} "
                                f"Choose {ACCEPTED[role]}.")
    if path.is_dir():
        source, files, folder = _open_folder(path, role, parameter)
        container = "folder"
    else:
        source, container = _open_file(path, role, parameter)
        files, folder = [path], None
    try:
        if len(source) == 0:
            raise CheckpointError(f"{parameter}: {path}: holds no tensors. Download it again, or choose "
                                  f"{ACCEPTED[role]}.")
        what = _CHECKS[role](source, path, parameter)
        if folder is not None:
            _check_folder_config(folder, role, parameter)
        return SniffedFile(path, role, container, what, len(source), sum(f.stat().st_size for f in files))
    finally:
        source.close()


# -- containers ---------------------------------------------------------------------------------
def _open_file(path: Path, role: str, parameter: str) -> tuple[TensorSource, str]:
    suffix = path.suffix.lower()
    if suffix in _UNFINISHED:
        raise CheckpointError(f"{parameter}: {path}: an unfinished download ('{suffix}'). Let the download "
                              "finish, or download the file again.")
    if suffix == ".json":
        raise InvalidInputError(f"{parameter}: {path}: a JSON file (config or index), not model weights. "
                                f"Give the model folder holding it ({path.parent}) or a weights file.")
    if suffix and suffix not in WEIGHT_SUFFIXES:
        raise UnknownFormatError(f"{parameter}: {path}: unsupported file type '{suffix}'; model files are "
                                 f"{', '.join(WEIGHT_SUFFIXES)}. Choose {ACCEPTED[role]}.")
    _refuse_lone_shard(path, parameter)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{parameter}: {path}: the file is empty (0 bytes); the download or copy did "
                              "not finish. Download it again.")
    kind = sniff(path)
    if kind == "unknown":
        raise CheckpointError(
            f"{parameter}: {path}: not safetensors, GGUF nor a torch checkpoint (first bytes "
            f"{_head(path)!r}, {size} bytes); the header is damaged or this is not a model file. "
            "Download it again.")
    if kind == "gguf":
        return _open_gguf(path, role, parameter), "gguf"
    with _reading(parameter, path):
        if kind == "torch":
            return _open_torch(path, parameter), "pt"
        return open_tensors(path), "safetensors"  # the reader checks header length, JSON and size


def _open_gguf(path: Path, role: str, parameter: str) -> TensorSource:
    from ..weights.gguf import open_gguf  # GGUFReader memory-maps; it parses only header and tensor table
    try:
        with _reading(parameter, path):
            return open_gguf(path)
    except CheckpointError as exc:
        if role == "dit":
            raise
        raise UnknownFormatError(
            f"{exc} Only the DiT can be a GGUF file; for {parameter} choose {ACCEPTED[role]}.") from exc


def _open_torch(path: Path, parameter: str) -> TensorSource:
    if not zipfile.is_zipfile(path):
        if _head(path)[:2] == b"PK":
            raise CheckpointError(
                f"{parameter}: {path}: a torch zip checkpoint whose end (the zip directory) is missing: the "
                "file is truncated. Download it again.")
        # Only a zip checkpoint can be memory-mapped; a legacy pickle would be read whole to be checked.
        try:
            torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise CheckpointError(
                f"{parameter}: {path}: a legacy (non-zip) torch checkpoint, which cannot be memory-mapped, so "
                "it cannot be checked without reading all of it. Convert it to safetensors, or load it and "
                "save it again with torch.save (zip format, the default since torch 1.6).") from exc
    return open_tensors(path)  # zip: the reader loads with weights_only=True and mmap=True


def _open_folder(path: Path, role: str, parameter: str) -> tuple[TensorSource, list[Path], Path]:
    """(tensors, weight files, the model folder) the way the role's loader reads a folder."""
    folder = _model_folder(path, role)
    index = sorted(folder.glob("*.safetensors.index.json"))
    safetensors = sorted(folder.glob("*.safetensors"))
    torch_files = sorted(f for s in (".pt", ".pth", ".bin", ".ckpt") for f in folder.glob("*" + s))
    models = safetensors + torch_files + sorted(folder.glob("*.gguf"))
    if not index and len(models) > 1 and not (folder / "config.json").is_file() \
            and not (folder / "adapter_config.json").is_file():
        names = [f.name for f in models]
        raise InvalidInputError(
            f"{parameter}: {folder}: a folder of {len(names)} separate model files, not one model "
            f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}). Give one file.")
    with _reading(parameter, folder):
        if index or safetensors:  # the reader joins the shards an index names, or every file
            return open_tensors(folder), (_index_shards(index[0]) if index else safetensors), folder
        bins = [f for f in torch_files if f.suffix == ".bin"]
        if role in ("llm", "clip") and bins:  # pytorch_model*.bin shards
            return ShardedSource([_open_torch(f, parameter) for f in bins], name=str(folder)), bins, folder
        if role == "vae" and len(torch_files) == 1:  # Tencent's vae/ folder: pytorch_model.pt
            return _open_torch(torch_files[0], parameter), torch_files, folder
    hint = f" Give the file itself ({models[0]})." if len(models) == 1 else ""
    inner = sorted(d.name for d in folder.iterdir() if d.is_dir() and any(
        f.suffix.lower() in WEIGHT_SUFFIXES for f in d.iterdir()))
    if not models and inner:
        hint = f" It holds model folders ({', '.join(inner[:6])}): give one of them."
    raise CheckpointError(
        f"{parameter}: {folder}: the folder holds no weights the {role} loader reads from a folder (found "
        f"{[f.name for f in models] or 'no model files'}).{hint} Choose {ACCEPTED[role]}.")


def _model_folder(path: Path, role: str) -> Path:
    """The role's own subfolder of a whole-pipeline folder, as the loaders pick it."""
    sub = path / _SUBFOLDER.get(role, "")
    if role in _SUBFOLDER and sub.is_dir():
        if role in ("llm", "clip") and not (path / "config.json").is_file():
            return sub
        if role in ("dit", "vae") and not any(f.suffix.lower() in WEIGHT_SUFFIXES for f in path.iterdir()):
            return sub
    return path


def _index_shards(index: Path) -> list[Path]:
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a valid safetensors index ({exc}). Download it again.") from exc
    return [index.parent / n for n in names if (index.parent / n).is_file()]


def _refuse_lone_shard(path: Path, parameter: str) -> None:
    if _SHARD.search(path.name) and list(path.parent.glob("*.index.json")):
        raise InvalidInputError(
            f"{parameter}: {path}: one shard of a sharded model; the others are beside it. Give the folder "
            f"({path.parent}) instead.")


def _check_folder_config(folder: Path, role: str, parameter: str) -> None:
    """The config.json the loaders read from a folder: required for the text towers, checked for the VAE."""
    config = folder / "config.json"
    if not config.is_file():
        if role in ("llm", "clip"):
            raise InvalidInputError(
                f"{parameter}: {folder}: a folder without config.json; a Hugging Face model folder needs one. "
                f"Give the folder that holds config.json, or a single weights file. Choose {ACCEPTED[role]}.")
        return
    if role not in ("vae", "llm", "clip"):
        return
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{parameter}: {config}: unreadable config.json ({exc}). Download it again.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{parameter}: {config}: config.json holds a {type(data).__name__}, not an object.")
    if role == "vae" and "latent_channels" not in data:
        raise CheckpointError(f"{parameter}: {config}: this config.json does not describe a VAE (no "
                              "latent_channels); the folder is probably not the VAE folder.")
    kind = data.get("model_type")
    if (role == "llm" and kind not in ("llama", "llava") and "text_config" not in data) or \
            (role == "clip" and kind not in ("clip", "clip_text_model", None)):
        raise UnknownFormatError(f"{parameter}: {config}: model_type {kind!r}, not {NOUNS[role]}. "
                                 f"Choose {ACCEPTED[role]}.")


@contextmanager
def _reading(parameter: str, path: Path) -> Iterator[None]:
    """Readers' errors, prefixed with the parameter; anything else they raise becomes a CheckpointError."""
    try:
        yield
    except HyVideoError as exc:
        if str(exc).startswith(f"{parameter}:"):
            raise
        kept = (CheckpointError, InvalidInputError, MissingPackageError)
        kind = type(exc) if isinstance(exc, kept) else CheckpointError
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise kind(f"{parameter}: {message}") from exc
    except Exception as exc:  # a reader tripping over a damaged file (IndexError, struct.error, ...)
        raise CheckpointError(
            f"{parameter}: {path}: could not be read ({type(exc).__name__}: {exc}). The file is probably "
            "truncated or corrupt: download it again.") from exc


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(8)


def _nearby(path: Path) -> str:
    parent = path.parent
    if not parent.is_dir():
        return f" (the folder {parent} does not exist either)"
    names = sorted(f.name for f in parent.iterdir() if f.suffix.lower() in WEIGHT_SUFFIXES or f.is_dir())
    return f" Model files there: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}." if names else ""


# -- kinds ---------------------------------------------------------------------------------------
def _dit_layout(src: TensorSource) -> DiTLayout | None:
    if _lora_stems(src.keys()):
        return None  # a LoRA that also trained norms carries a DiT marker key
    try:
        return detect_layout(src)  # keys only: recipes name source keys, nothing is read
    except UnknownFormatError:
        return None


def _vae_prefix(src: TensorSource) -> str | None:
    found = sorted((k[: -len(VAE_ANCHOR)] for k in src.keys() if k.endswith(VAE_ANCHOR)), key=len)
    found = [p for p in found if p == "" or p.endswith(".")]
    return found[0] if found else None


def _tower_prefix(src: TensorSource, layout: TowerLayout) -> str | None:
    for key in src.keys():
        if key.endswith(layout.anchor) and f"{key[: -len(layout.anchor)]}{layout.marker}" in src:
            return key[: -len(layout.anchor)]
    return None


def _lora_stems(keys) -> dict[str, str]:
    """{module stem: a down/A key} for every LoRA pair-like key."""
    from ..lora.keys import DOWN, UP, split_role
    stems: dict[str, str] = {}
    for key in keys:
        stem, part = split_role(key)
        if part == DOWN or (part == UP and stem not in stems):
            stems[stem] = key
    return stems


def _lora_targets(src: TensorSource):
    from ..lora.keys import block_count_hint, name_index
    stems = _lora_stems(src.keys())
    if not stems:
        return stems, {}
    index = name_index(block_count_hint(src.keys()))
    return stems, {s: t for s in stems if (t := index.module(s)) is not None}


_FITS: dict[str, Callable[[TensorSource], bool]] = {
    "dit": lambda src: _dit_layout(src) is not None,
    "vae": lambda src: _vae_prefix(src) is not None,
    "llm": lambda src: _tower_prefix(src, LLAMA_LAYOUT) is not None,
    "clip": lambda src: _tower_prefix(src, CLIP_LAYOUT) is not None,
    "lora": lambda src: bool(_lora_targets(src)[1]),
}


def _wrong_kind(src: TensorSource, path: Path, role: str, parameter: str, detail: str = "") -> UnknownFormatError:
    fits = [r for r in ROLES if r != role and _FITS[r](src)]
    what = NOUNS[fits[0]] if fits else describe(src.keys())
    hint = f" It belongs in {_parameter_for(parameter, fits[0])}." if fits else ""
    return UnknownFormatError(
        f"{parameter}: {path}: this {'folder' if path.is_dir() else 'file'} is {what}, not {NOUNS[role]} "
        f"({len(src)} tensors{detail}).{hint} Choose {ACCEPTED[role]}.")


def _parameter_for(parameter: str, role: str) -> str:
    return f"--{role}" if parameter.startswith("--") else f"the {role} input"


def _check_dit(src: TensorSource, path: Path, parameter: str) -> str:
    layout = _dit_layout(src)
    if layout is None:
        raise _wrong_kind(src, path, "dit", parameter)
    names = f"{layout.format} names" + (f" under '{layout.prefix}'" if layout.prefix else "")
    extra = f", {len(layout.unknown)} keys not recognised" if layout.unknown else ""
    return f"HunyuanVideo DiT ({names}), {len(src)} tensors, {_precision(src)}{extra}"


def _check_vae(src: TensorSource, path: Path, parameter: str) -> str:
    prefix = _vae_prefix(src)
    if prefix is None:
        if any(k.endswith("decoder.conv_in.weight") for k in src.keys()):
            raise UnknownFormatError(
                f"{parameter}: {path}: this file is a 2D image VAE (e.g. Stable Diffusion / Flux), not "
                f"{NOUNS['vae']}. Choose {ACCEPTED['vae']}.")
        raise _wrong_kind(src, path, "vae", parameter, f", no '{VAE_ANCHOR}'")
    inner = [k[len(prefix):] for k in src.keys() if k.startswith(prefix)]
    if any(".mid.block_1." in k or k.startswith("decoder.up.") for k in inner):
        raise UnknownFormatError(
            f"{parameter}: {path}: the VAE is stored in ComfyUI's internal (LDM) key layout, which is not "
            f"supported. Choose {ACCEPTED['vae']}.")
    shape = src.shape(prefix + VAE_ANCHOR)
    if len(shape) != 5:
        raise UnknownFormatError(
            f"{parameter}: {path}: '{prefix}{VAE_ANCHOR}' has shape {list(shape)}; the HunyuanVideo VAE has "
            f"5-D (3D conv) weights, so this is a different VAE. Choose {ACCEPTED['vae']}.")
    parts = "" if any(k.startswith("encoder.") for k in inner) else " (decoder only)"
    others = len(src) - len(inner)
    where = (f" under '{prefix}'" + (f" ({others} other tensors not used)" if others else "")) if prefix else ""
    return f"HunyuanVideo 3D VAE{parts}{where}, {len(inner)} tensors, {_precision(src)}"


def _tower_check(layout: TowerLayout, role: str, title: str):
    def check(src: TensorSource, path: Path, parameter: str) -> str:
        prefix = _tower_prefix(src, layout)
        if prefix is None:
            raise _wrong_kind(src, path, role, parameter)
        stack = layout.anchor.split(".0.")[0]  # "layers" / "encoder.layers"
        layers = count_layers(src.shapes(), rf"^{re.escape(prefix + stack)}\.(\d+)\.")
        hidden = src.shape(prefix + layout.marker)[-1]
        return f"{title}, {layers} layers, hidden {hidden}, {len(src)} tensors, {_precision(src)}"
    return check


def _check_lora(src: TensorSource, path: Path, parameter: str) -> str:
    stems, targets = _lora_targets(src)
    if not stems:
        raise _wrong_kind(src, path, "lora", parameter, ", none of them lora_A/B or lora_down/up")
    if not targets:
        from ..lora.keys import unsupported_reason
        reasons = sorted({r for k in src.keys() if (r := unsupported_reason(k))})
        first = ", ".join(list(stems)[:3])
        raise UnknownFormatError(
            f"{parameter}: {path}: a LoRA for another model: none of its {len(stems)} LoRA modules is a "
            f"HunyuanVideo DiT module (first: {first}){'; ' + '; '.join(reasons) if reasons else ''}. "
            f"Choose {ACCEPTED['lora']}.")
    ranks = sorted({src.shape(stems[s])[0] for s in targets})
    rank = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"
    namings = sorted({t.naming + (" underscored" if t.underscored else "") for t in targets.values()})
    skipped = f", {len(stems) - len(targets)} modules not matched" if len(targets) < len(stems) else ""
    return (f"HunyuanVideo LoRA ({', '.join(namings)} names), {len(targets)} modules, {rank}, "
            f"{len(src)} tensors, {_precision(src)}{skipped}")


_CHECKS = {"dit": _check_dit, "vae": _check_vae, "llm": _tower_check(LLAMA_LAYOUT, "llm", "Llama text encoder"),
           "clip": _tower_check(CLIP_LAYOUT, "clip", "CLIP text encoder"), "lora": _check_lora}


def _precision(src: TensorSource) -> str:
    """The storage of most elements, others after it: 'bf16', 'fp8_scaled (fp8_e4m3fn + fp16)', 'GGUF Q8_0 (+F32)'."""
    elements: Counter = Counter()
    qtype = getattr(src, "qtype", None)  # GGUF sources name each tensor's quant type
    for key in src.keys():
        n = math.prod(src.shape(key))
        if qtype is not None:
            elements[qtype(key).name] += n
        elif src.dtype(key) in _DTYPE_NAMES:
            elements[_DTYPE_NAMES[src.dtype(key)]] += n
    if not elements:
        return "no float tensors"
    order = [name for name, _ in elements.most_common()]
    if qtype is not None:
        return f"GGUF {order[0]}" + (f" (+{' +'.join(order[1:])})" if order[1:] else "")
    scaled = any(k.endswith(SIDECAR_SUFFIXES) or k in SIDECAR_KEYS for k in src.keys())
    if scaled and any(n.startswith("fp8") for n in order):
        return f"fp8_scaled ({' + '.join(order)})"
    return order[0] + (f" (+{' +'.join(order[1:])})" if order[1:] else "")
