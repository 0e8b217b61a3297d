"""The host services the nodes need, without ComfyUI: used by the CLI and the tests.

It mirrors what ComfyUI gives a pack (model folders with ComfyUI's default layout, a progress bar
that checks for interrupts, an interrupt flag that is cleared when raised, output/temp folders,
devices) so that node code runs unchanged in both. `nodes/host.py` picks this or the ComfyUI one.
"""
from __future__ import annotations

import gc
import logging
import os
import tempfile
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from hyvideo_core.errors import CancelledError, InvalidInputError

log = logging.getLogger(__name__)

# ComfyUI's model extensions (folder_paths.supported_pt_extensions) plus GGUF, which we also load.
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf"})

# Kind -> sub-folders of the models folder, as in ComfyUI (first one is where new files go).
DEFAULT_FOLDERS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "loras": ("loras",),
    "clip_vision": ("clip_vision",),
    "vae_approx": ("vae_approx",),
}
LEGACY_KINDS = {"unet": "diffusion_models", "clip": "text_encoders"}

# (node_id, value, total, preview) -> None; preview is an RGB uint8 array [H, W, 3] or None.
ProgressListener = Callable[[str | None, int, int, object], None]


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


def strip_annotation(name: str) -> str:
    """'clip.mp4 [input]' (the frontend's annotated form) -> 'clip.mp4'."""
    for tag in (" [input]", " [output]", " [temp]"):
        if name.endswith(tag):
            return name[: -len(tag)]
    return name


def missing_input_error(name: str, folder: str, available: list[str]) -> InvalidInputError:
    shown = ", ".join(available[:10]) + (" ..." if len(available) > 10 else "") if available else "none"
    return InvalidInputError(f"input file {name!r} was not found in the input folder {folder}; upload it or "
                             f"copy it there (available: {shown}).")


def missing_model_error(kind: str, name: str, folders: list[str], available: list[str]) -> InvalidInputError:
    shown = ", ".join(available[:10]) + (" ..." if len(available) > 10 else "") if available else "none"
    return InvalidInputError(f"{kind}: model file {name!r} was not found in the folders searched "
                             f"{folders}; put the file in one of them or pick another one "
                             f"(available: {shown}).")


def preview_array(rgb) -> "object":
    """A preview frame (tensor/array [H, W, 3], float 0..1 or uint8) -> uint8 numpy [H, W, 3]."""
    from hyvideo_core.video import frames_to_uint8
    return frames_to_uint8(rgb[None], name="preview")[0]


class StandaloneProgress:
    def __init__(self, host: "StandaloneHost", total: int, node_id: str | None):
        self.host, self.total, self.node_id, self.value = host, int(total), node_id, 0

    def update(self, step: int, total: int | None = None, preview_rgb=None) -> None:
        """Report `step` of `total` (absolute), with an optional preview frame; raises if interrupted."""
        if total is not None:
            self.total = int(total)
        self.value = min(int(step), self.total)
        self.host.check_interrupt()
        listener = self.host.on_progress
        if listener is not None:
            preview = preview_array(preview_rgb) if preview_rgb is not None else None
            listener(self.node_id or self.host.current_node, self.value, self.total, preview)


class StandaloneHost:
    name = "standalone"

    def __init__(self, models_dir: str | os.PathLike | None = None, output_dir: str | os.PathLike | None = None,
                 temp_dir: str | os.PathLike | None = None, input_dir: str | os.PathLike | None = None):
        self._interrupted = threading.Event()
        self._unloadables: weakref.WeakSet = weakref.WeakSet()
        self.routes: list[tuple[str, str, Callable]] = []
        self.on_progress: ProgressListener | None = None
        self.current_node: str | None = None  # set by whoever executes nodes (harness, CLI)
        self.configure(models_dir, output_dir, temp_dir, input_dir)

    def configure(self, models_dir=None, output_dir=None, temp_dir=None, input_dir=None) -> None:
        """(Re)point the host at a models folder laid out like ComfyUI's, and at output/temp/input folders."""
        self.models_dir = Path(models_dir or os.environ.get("HYVIDEO_MODELS_DIR", "models")).resolve()
        self._output_dir = Path(output_dir or "output").resolve()
        self._input_dir = Path(input_dir or "input").resolve()
        self._temp_dir = Path(temp_dir or Path(tempfile.gettempdir()) / "hyvideo").resolve()
        self._folders = {kind: [str(self.models_dir / sub) for sub in subs] for kind, subs in DEFAULT_FOLDERS.items()}

    # ---- model folders ----
    def folders(self, kind: str) -> list[str]:
        kind = LEGACY_KINDS.get(kind, kind)
        if kind not in self._folders:
            raise InvalidInputError(f"model folder kind {kind!r} is unknown; known: {sorted(self._folders)}.")
        return list(self._folders[kind])

    def add_model_folder(self, kind: str, path: str | os.PathLike) -> None:
        kind = LEGACY_KINDS.get(kind, kind)
        paths = self._folders.setdefault(kind, [])
        if str(path) not in paths:
            paths.append(str(path))

    def filenames(self, kind: str, extensions=MODEL_EXTENSIONS) -> list[str]:
        return scan_model_files(self.folders(kind), extensions)

    def model_dirs(self, kind: str, marker: str = "config.json") -> list[str]:
        """Sub-folders of `kind` holding `marker` (Hugging Face model folders)."""
        return scan_model_dirs(self.folders(kind), marker)

    def full_dir_path(self, kind: str, name: str) -> str:
        folders = self.folders(kind)
        relative = os.path.relpath(os.path.join("/", name), "/")
        for folder in folders:
            if os.path.isdir(os.path.join(folder, relative)):
                return os.path.join(folder, relative)
        raise missing_model_error(kind, name, folders, self.model_dirs(kind))

    def comfy_root(self) -> str | None:
        """The ComfyUI checkout (for its bundled tokenizers): $COMFYUI_PATH, else none."""
        return os.environ.get("COMFYUI_PATH") or None

    def full_path(self, kind: str, name: str) -> str:
        folders = self.folders(kind)
        relative = os.path.relpath(os.path.join("/", name), "/")  # no escaping the folder with ../
        for folder in folders:
            candidate = os.path.join(folder, relative)
            if os.path.isfile(candidate):
                return candidate
        raise missing_model_error(kind, name, folders, self.filenames(kind))

    def output_dir(self) -> str:
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return str(self._output_dir)

    def temp_dir(self) -> str:
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        return str(self._temp_dir)

    def input_dir(self) -> str:
        return str(self._input_dir)

    def input_files(self, extensions) -> list[str]:
        return list_input_files(self.input_dir(), extensions)

    def input_path(self, name: str) -> str:
        path = os.path.join(self.input_dir(), os.path.relpath(os.path.join("/", strip_annotation(name)), "/"))
        if not os.path.isfile(path):
            raise missing_input_error(name, self.input_dir(), self.input_files(None))
        return path

    # ---- progress and interrupts ----
    def progress(self, total: int, node_id: str | None = None) -> StandaloneProgress:
        return StandaloneProgress(self, total, node_id)

    def interrupt(self) -> None:
        """Ask the running work to stop at its next check (Ctrl-C in the CLI, tests)."""
        self._interrupted.set()

    def clear_interrupt(self) -> None:
        self._interrupted.clear()

    def check_interrupt(self) -> None:
        """Raise CancelledError once if an interrupt was asked for (the flag is cleared, as in ComfyUI)."""
        if self._interrupted.is_set():
            self._interrupted.clear()
            raise CancelledError("Cancelled: the run was interrupted.")

    @contextmanager
    def interruptible(self):
        """Around engine calls: frees memory when they fail (a CancelledError stays as it is here)."""
        try:
            yield
        except BaseException:
            self.free_memory()
            raise

    # ---- devices and memory ----
    def devices(self) -> tuple[torch.device, torch.device]:
        """(main, offload): the GPU when there is one, and the CPU."""
        main = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return main, torch.device("cpu")

    def device_memory(self, device: torch.device | None = None) -> tuple[int, int]:
        """(free, total) bytes of `device` (default: the main device); RAM for the CPU."""
        device = device or self.devices()[0]
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            return int(free), int(total)
        import psutil
        memory = psutil.virtual_memory()
        return int(memory.available), int(memory.total)

    def free_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def free_device_memory(self, nbytes: int, device: torch.device) -> None:
        """Nothing else holds device memory here (ComfyUI's host evicts its own models)."""

    def register_unloadable(self, obj) -> None:
        """Remember `obj` (weakly): its `unload()` runs when the host unloads models."""
        self._unloadables.add(obj)

    def unload_all(self) -> None:
        for obj in list(self._unloadables):
            obj.unload()
        self.free_memory()

    # ---- server ----
    def register_route(self, method: str, path: str, handler: Callable) -> None:
        """No server here: routes are kept so a caller (tests) can mount them on an aiohttp app."""
        self.routes.append((method.upper(), path, handler))
