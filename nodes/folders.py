"""Model and input folders as the nodes list them: recursive model-file and Hugging Face folder
scans, the input folder's files, and the missing-file errors that name the folders searched.

Plain os functions, no ComfyUI: ComfyHost uses them for what folder_paths does not list (.gguf
files, model folders), and any other host can reuse them.
"""
from __future__ import annotations

import os

from hyvideo_core.errors import InvalidInputError

# ComfyUI's model extensions (folder_paths.supported_pt_extensions) plus GGUF, which we also load.
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf"})


def _walk(folders: list[str]):
    """(folder, dirpath, subdirs, files) under each existing folder, skipping hidden folders."""
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for dirpath, subdirs, files in os.walk(folder, followlinks=True):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            yield folder, dirpath, subdirs, files


def scan_model_files(folders: list[str], extensions) -> list[str]:
    """Relative paths of model files under `folders`, recursive, sorted, no hidden files."""
    found: set[str] = set()
    for folder, dirpath, _, files in _walk(folders):
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                # Same form as ComfyUI's folder_paths lists (OS separators), so names match in both hosts.
                found.add(os.path.relpath(os.path.join(dirpath, name), folder))
    return sorted(found)


def scan_model_dirs(folders: list[str], marker: str = "config.json") -> list[str]:
    """Relative paths of sub-folders holding `marker` (Hugging Face model folders), sorted; the
    folders inside such a folder are not searched further."""
    found: set[str] = set()
    for folder, dirpath, subdirs, files in _walk(folders):
        if dirpath != folder and marker in files:
            found.add(os.path.relpath(dirpath, folder))
            subdirs[:] = []
    return sorted(found)


def list_input_files(folder: str, extensions) -> list[str]:
    """Files directly in the input folder with one of `extensions` (None: any), as ComfyUI's Load
    Image lists them."""
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if not name.startswith(".")
                  and os.path.isfile(os.path.join(folder, name))
                  and (extensions is None or os.path.splitext(name)[1].lower() in extensions))


def _shown(available: list[str]) -> str:
    return ", ".join(available[:10]) + (" ..." if len(available) > 10 else "") if available else "none"


def missing_input_error(name: str, folder: str, available: list[str]) -> InvalidInputError:
    return InvalidInputError(f"input file {name!r} was not found in the input folder {folder}; upload it or "
                             f"copy it there (available: {_shown(available)}).")


def missing_model_error(kind: str, name: str, folders: list[str], available: list[str]) -> InvalidInputError:
    return InvalidInputError(f"{kind}: model file {name!r} was not found in the folders searched "
                             f"{folders}; put the file in one of them or pick another one "
                             f"(available: {_shown(available)}).")
