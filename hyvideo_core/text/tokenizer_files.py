"""Finding and checking the two tokenizers.

A Hugging Face text-encoder folder carries its tokenizer; a ComfyUI single file does not, so
the caller points at a folder (inside ComfyUI: comfy/text_encoders/llama_tokenizer and
comfy/sd1_tokenizer). Some ComfyUI checkouts lack llama_tokenizer/tokenizer.json, and
ComfyUI's own loader then silently tokenizes every prompt to 3 tokens; we refuse such a
folder with a message instead.

The Llama-3 tokenizer is loaded from tokenizer.json as is (PreTrainedTokenizerFast), never
rebuilt by a model-specific class, so its BPE and pre-tokenizer are exactly the file's.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

from ..errors import CheckpointError, MissingPackageError

log = logging.getLogger(__name__)

LLAMA_CHAT_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def _as_folder(path) -> Path | None:
    if path is None:
        return None
    path = Path(os.fspath(path)).expanduser()
    return path.parent if path.is_file() and path.name.endswith(".json") else path


def _llama_files_missing(folder: Path) -> str | None:
    if not folder.is_dir():
        return "no such folder"
    if not (folder / "tokenizer.json").is_file():
        present = sorted(p.name for p in folder.iterdir())[:8]
        return f"no tokenizer.json (the folder holds {present or 'nothing'})"
    return None


def _clip_files_missing(folder: Path) -> str | None:
    if not folder.is_dir():
        return "no such folder"
    if (folder / "tokenizer.json").is_file():
        return None
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return None
    present = sorted(p.name for p in folder.iterdir())[:8]
    return f"neither tokenizer.json nor vocab.json + merges.txt (the folder holds {present or 'nothing'})"


def _pick_folder(candidates: Sequence[tuple[str, Path | None]], missing: Callable[[Path], str | None],
                 what: str, hint: str) -> Path:
    looked = []
    for label, folder in candidates:
        if folder is None:
            continue
        problem = missing(folder)
        if problem is None:
            if looked:
                log.warning("%s tokenizer: using %s (%s); skipped %s", what, folder, label, "; ".join(looked))
            return folder
        looked.append(f"{folder} ({label}): {problem}")
    if not looked:
        raise CheckpointError(f"{what} tokenizer: no tokenizer folder was given. {hint}")
    raise CheckpointError(f"{what} tokenizer not found. Looked in: " + "; ".join(looked) + f". {hint}")


def load_llama_tokenizer(candidates: Sequence[tuple[str, Path | None]]):
    folder = _pick_folder(
        [(label, _as_folder(path)) for label, path in candidates], _llama_files_missing, "Llama",
        "Point `tokenizer` at a folder with the Llama-3 tokenizer.json, e.g. the text_encoder "
        "folder of a llava-llama-3-8b download or ComfyUI's comfy/text_encoders/llama_tokenizer "
        "(some ComfyUI checkouts lack its tokenizer.json: restore it with git).")
    tokenizer = _load(folder, fast_only=True)
    for token in LLAMA_CHAT_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise CheckpointError(
                f"{folder}: this tokenizer does not know the Llama-3 chat token {token} (it becomes "
                f"{len(ids)} tokens). The HunyuanVideo template needs the Llama-3 tokenizer.")
    if not tokenizer("a cat", add_special_tokens=False)["input_ids"]:
        raise CheckpointError(f"{folder}: the tokenizer turns text into no tokens; tokenizer.json is broken.")
    return tokenizer, folder


def load_clip_tokenizer(candidates: Sequence[tuple[str, Path | None]]):
    folder = _pick_folder(
        [(label, _as_folder(path)) for label, path in candidates], _clip_files_missing, "CLIP",
        "Point `clip_tokenizer` at the folder of openai/clip-vit-large-patch14 or ComfyUI's "
        "comfy/sd1_tokenizer.")
    tokenizer = _load(folder, fast_only=False)
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise CheckpointError(
            f"{folder}: the CLIP tokenizer defines no BOS/EOS token (found bos={tokenizer.bos_token!r}, "
            f"eos={tokenizer.eos_token!r}); CLIP's pooled output is read at the EOS token.")
    return tokenizer, folder


def _load(folder: Path, fast_only: bool):
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise MissingPackageError("The text encoder needs `transformers`: pip install transformers") from exc
    try:
        if fast_only:
            return PreTrainedTokenizerFast.from_pretrained(str(folder))
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise CheckpointError(f"{folder}: the tokenizer files could not be loaded ({exc}).") from exc


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id: padding never reaches a kept position (the
    towers are causal and the pads come last), so any in-vocabulary id is correct."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if candidate is not None:
            return candidate
    return 0
