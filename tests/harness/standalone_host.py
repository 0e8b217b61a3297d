"""The host services the nodes need, without ComfyUI, for the tests (tests/conftest.py installs
one with the pack's `nodes.host.install_host`).

It mirrors what ComfyUI gives a pack (model folders with ComfyUI's default layout, a progress bar
that checks for interrupts, an interrupt flag that is cleared when raised, output/temp folders,
devices) so that node code runs unchanged in both. The folder scans and missing-file errors are
the product's own (nodes/folders.py), the same ones ComfyHost uses.
"""
from __future__ import annotations

import gc
import os
import tempfile
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from hyvideo_core.errors import CancelledError, HyVideoError, InvalidInputError

from .pack import pack_module

pack_folders = pack_module("nodes.folders")
preview_array = pack_module("nodes.host").preview_array

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


def strip_annotation(name: str) -> str:
    """'clip.mp4 [input]' (the frontend's annotated form) -> 'clip.mp4'."""
    for tag in (" [input]", " [output]", " [temp]"):
        if name.endswith(tag):
            return name[: -len(tag)]
    return name


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
        self.vram_mode = "normal"             # memory_mode(): what ComfyUI's --lowvram/--novram would set
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

    def filenames(self, kind: str, extensions=pack_folders.MODEL_EXTENSIONS) -> list[str]:
        return pack_folders.scan_model_files(self.folders(kind), extensions)

    def model_dirs(self, kind: str, marker: str = "config.json") -> list[str]:
        """Sub-folders of `kind` holding `marker` (Hugging Face model folders)."""
        return pack_folders.scan_model_dirs(self.folders(kind), marker)

    def full_dir_path(self, kind: str, name: str) -> str:
        folders = self.folders(kind)
        relative = os.path.relpath(os.path.join("/", name), "/")
        for folder in folders:
            if os.path.isdir(os.path.join(folder, relative)):
                return os.path.join(folder, relative)
        raise pack_folders.missing_model_error(kind, name, folders, self.model_dirs(kind))

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
        raise pack_folders.missing_model_error(kind, name, folders, self.filenames(kind))

    def output_dir(self) -> str:
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return str(self._output_dir)

    def temp_dir(self) -> str:
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        return str(self._temp_dir)

    def input_dir(self) -> str:
        return str(self._input_dir)

    def input_files(self, extensions) -> list[str]:
        return pack_folders.list_input_files(self.input_dir(), extensions)

    def input_path(self, name: str) -> str:
        path = os.path.join(self.input_dir(), os.path.relpath(os.path.join("/", strip_annotation(name)), "/"))
        if not os.path.isfile(path):
            raise pack_folders.missing_input_error(name, self.input_dir(), self.input_files(None))
        return path

    # ---- progress and interrupts ----
    def progress(self, total: int, node_id: str | None = None) -> StandaloneProgress:
        return StandaloneProgress(self, total, node_id)

    def interrupt(self) -> None:
        """Ask the running work to stop at its next check (what the Cancel button does in ComfyUI)."""
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

    def place_components(self, placements, nbytes: int, device: torch.device) -> None:
        """Nobody else to ask: text towers and VAEs visit the device for their stage."""

    def memory_mode(self) -> str:
        """As ComfyUI's --lowvram / --novram / --highvram would set it; tests change `vram_mode`."""
        return self.vram_mode

    def register_unloadable(self, obj) -> None:
        """Remember `obj` (weakly): its `unload()` runs when the host unloads models."""
        self._unloadables.add(obj)

    def unload_all(self) -> None:
        for obj in list(self._unloadables):
            obj.unload()
        self.free_memory()

    def native_model(self, model, shift: float = 7.0, cache=None):
        """A native ComfyUI MODEL needs ComfyUI itself (its model classes, samplers and memory manager)."""
        raise HyVideoError("HunyuanVideo To Native MODEL: a native MODEL runs in ComfyUI's own samplers and memory "
                           "manager, which this standalone host does not have; run the node inside ComfyUI "
                           "(tests: tests/test_comfyui_native.py), or use the HunyuanVideo Sampler here.")

    # ---- server ----
    def register_route(self, method: str, path: str, handler: Callable) -> None:
        """No server here: routes are kept so a caller (tests) can mount them on an aiohttp app."""
        self.routes.append((method.upper(), path, handler))
