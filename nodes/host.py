"""The one module that talks to ComfyUI (folder_paths, comfy.*, server).

Node code uses the module-level `host` and nothing else from the host application:

    from .host import host
    path = host.full_path("diffusion_models", unet_name)   # clear error naming the folders searched
    bar = host.progress(total=steps, node_id=unique_id)
    bar.update(step, preview_rgb=frame)                     # also raises if the user pressed Cancel
    main, offload = host.devices()
    with host.interruptible():                              # engine CancelledError -> host's interrupt
        ...

`host` forwards every attribute read and write to the installed host, so node modules keep the
object they imported while the host behind it changes (`install_host`). Inside a running ComfyUI the
installed host is a ComfyHost, created when the pack is imported. Anywhere else it is a NoHost
until someone calls `install_host(...)` (the tests install their standalone host): the pack still
imports (routes are recorded and handed to the next host installed, model lists are empty), and
every other service raises a HyVideoError saying the nodes run inside ComfyUI.
"""
from __future__ import annotations

import logging
import os
import sys
import weakref
from contextlib import contextmanager
from typing import Callable

import torch

from hyvideo_core.errors import CancelledError, HyVideoError, InvalidInputError

from .folders import (MODEL_EXTENSIONS, list_input_files, missing_input_error, missing_model_error, scan_model_dirs,
                      scan_model_files)

log = logging.getLogger(__name__)

PREVIEW_MAX_SIZE = 512  # longest side of the latent previews sent to the browser


# What node code may ask of a host (besides `name` and `routes`); every host implements all of it.
HOST_METHODS = (
    "folders", "filenames", "full_path", "model_dirs", "full_dir_path", "comfy_root",
    "output_dir", "input_dir", "input_files", "input_path",
    "progress", "check_interrupt", "interruptible",
    "devices", "device_memory", "free_memory", "free_device_memory", "register_unloadable", "unload_all",
    "register_route",
)


def preview_array(rgb) -> "object":
    """A preview frame (tensor/array [H, W, 3], float 0..1 or uint8) -> uint8 numpy [H, W, 3]."""
    from hyvideo_core.video import frames_to_uint8
    return frames_to_uint8(rgb[None], name="preview")[0]


def comfyui_is_running() -> bool:
    # Importing comfy.model_management outside a running ComfyUI would parse sys.argv and pick
    # devices; ComfyUI always imports both of these itself before it loads any pack.
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


class ComfyProgress:
    def __init__(self, host: "ComfyHost", total: int, node_id: str | None):
        import comfy.utils
        self.host = host
        self.bar = comfy.utils.ProgressBar(int(total), node_id=node_id)

    def update(self, step: int, total: int | None = None, preview_rgb=None) -> None:
        preview = None
        if preview_rgb is not None:
            from PIL import Image
            preview = ("JPEG", Image.fromarray(preview_array(preview_rgb)), PREVIEW_MAX_SIZE)
        self.bar.update_absolute(int(step), None if total is None else int(total), preview)
        self.host.check_interrupt()  # ComfyUI's progress hook checks too; this also covers no-hook setups


class ComfyHost:
    name = "comfyui"

    def __init__(self):
        import comfy.model_management
        import folder_paths
        self._fp = folder_paths
        self._mm = comfy.model_management
        self._unloadables: weakref.WeakSet = weakref.WeakSet()
        self.routes: list[tuple[str, str, Callable]] = []
        self._follow_model_unloads()

    # ---- model folders (folder_paths) ----
    def folders(self, kind: str) -> list[str]:
        try:
            return self._fp.get_folder_paths(kind)
        except KeyError:
            raise InvalidInputError(f"model folder kind {kind!r} is unknown to ComfyUI; known: "
                                    f"{sorted(self._fp.folder_names_and_paths)}.") from None

    def filenames(self, kind: str, extensions=MODEL_EXTENSIONS) -> list[str]:
        """ComfyUI's (cached) list for `kind`, plus files with extensions ComfyUI does not list (.gguf)."""
        folders = self.folders(kind)
        comfy_extensions = self._fp.folder_names_and_paths[self._fp.map_legacy(kind)][1]
        listed = [name for name in self._fp.get_filename_list(kind)
                  if not extensions or _extension(name) in extensions]
        extra = set(extensions) - set(comfy_extensions) if comfy_extensions else set()
        return sorted(set(listed) | set(scan_model_files(folders, extra) if extra else ()))

    def full_path(self, kind: str, name: str) -> str:
        path = self._fp.get_full_path(kind, name)
        if path is None:
            raise missing_model_error(kind, name, self.folders(kind), self.filenames(kind))
        return path

    def model_dirs(self, kind: str, marker: str = "config.json") -> list[str]:
        """Sub-folders of `kind` holding `marker` (Hugging Face model folders)."""
        return scan_model_dirs(self.folders(kind), marker)

    def full_dir_path(self, kind: str, name: str) -> str:
        relative = os.path.relpath(os.path.join("/", name), "/")
        for folder in self.folders(kind):
            if os.path.isdir(os.path.join(folder, relative)):
                return os.path.join(folder, relative)
        raise missing_model_error(kind, name, self.folders(kind), self.model_dirs(kind))

    def comfy_root(self) -> str | None:
        """The ComfyUI checkout this runs in (its bundled tokenizers live there)."""
        return os.path.dirname(os.path.abspath(self._fp.__file__))

    def output_dir(self) -> str:
        return self._fp.get_output_directory()

    def input_dir(self) -> str:
        return self._fp.get_input_directory()

    def input_files(self, extensions) -> list[str]:
        return list_input_files(self.input_dir(), extensions)

    def input_path(self, name: str) -> str:
        """A file of the input folder; accepts the frontend's annotated names ('x.png [input]')."""
        path = self._fp.get_annotated_filepath(name)
        if not os.path.isfile(path):
            raise missing_input_error(name, self.input_dir(), self.input_files(None))
        return path

    # ---- progress and interrupts (comfy.utils.ProgressBar, model_management's flag) ----
    def progress(self, total: int, node_id: str | None = None) -> ComfyProgress:
        return ComfyProgress(self, total, node_id)

    def check_interrupt(self) -> None:
        """Raises ComfyUI's own InterruptProcessingException, so ComfyUI reports 'interrupted'."""
        self._mm.throw_exception_if_processing_interrupted()

    @contextmanager
    def interruptible(self):
        """Around engine calls: the engine's CancelledError becomes ComfyUI's interrupt, and memory
        is given back when the call fails."""
        try:
            yield
        except CancelledError as error:
            self.free_memory()
            raise self._mm.InterruptProcessingException() from error
        except BaseException:
            self.free_memory()
            raise

    # ---- devices and memory (comfy.model_management) ----
    def devices(self) -> tuple[torch.device, torch.device]:
        return self._mm.get_torch_device(), self._mm.unet_offload_device()

    def device_memory(self, device: torch.device | None = None) -> tuple[int, int]:
        device = device or self._mm.get_torch_device()
        return int(self._mm.get_free_memory(device)), int(self._mm.get_total_memory(device))

    def free_memory(self) -> None:
        self._mm.soft_empty_cache()

    def free_device_memory(self, nbytes: int, device: torch.device) -> None:
        """Ask ComfyUI to move its own models off `device` until `nbytes` are free there (it knows
        nothing about ours otherwise). CPU memory is left to the OS."""
        if torch.device(device).type != "cpu":
            self._mm.free_memory(int(nbytes), torch.device(device))

    def register_unloadable(self, obj) -> None:
        """Remember `obj` (weakly): its `unload()` runs when ComfyUI unloads all models
        (the Unload Models button, POST /free)."""
        self._unloadables.add(obj)

    def unload_all(self) -> None:
        for obj in list(self._unloadables):
            obj.unload()
        self.free_memory()

    def _follow_model_unloads(self) -> None:
        # ComfyUI only unloads its own ModelPatchers; it has no hook for other models, so we chain
        # onto unload_all_models (looked up by attribute at call time by main.py and /free).
        original = self._mm.unload_all_models
        host_ref = weakref.ref(self)

        def unload_all_models(*args, **kwargs):
            result = original(*args, **kwargs)
            host = host_ref()
            if host is not None:
                host.unload_all()
            return result

        unload_all_models.__wrapped__ = original
        self._mm.unload_all_models = unload_all_models

    # ---- server routes (server.PromptServer) ----
    def register_route(self, method: str, path: str, handler: Callable) -> None:
        """Add an aiohttp route to ComfyUI's server (also served under /api by ComfyUI)."""
        server = sys.modules.get("server")
        instance = getattr(getattr(server, "PromptServer", None), "instance", None)
        if instance is None:
            log.warning("hyvideo: ComfyUI has no running server; route %s %s not registered", method, path)
            self.routes.append((method.upper(), path, handler))
            return
        taken = {(getattr(r, "method", None), getattr(r, "path", None)) for r in instance.routes}
        if (method.upper(), path) in taken:
            # A second copy of the pack (two folders): a duplicate route would stop ComfyUI's start-up.
            log.warning("hyvideo: route %s %s is already registered (another copy of this pack?); "
                        "keeping the first", method.upper(), path)
            return
        instance.routes.route(method.upper(), path)(handler)


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


class NoHost:
    """The host outside ComfyUI until one is installed: enough for the pack to import and for
    INPUT_TYPES to answer (empty lists); any other service raises a HyVideoError."""

    name = "none"

    def __init__(self):
        self.routes: list[tuple[str, str, Callable]] = []

    def register_route(self, method: str, path: str, handler: Callable) -> None:
        """Recorded only; `install_host` hands these routes to the host installed next."""
        self.routes.append((method.upper(), path, handler))

    def filenames(self, kind: str, extensions=MODEL_EXTENSIONS) -> list[str]:
        return []

    def model_dirs(self, kind: str, marker: str = "config.json") -> list[str]:
        return []

    def input_files(self, extensions) -> list[str]:
        return []


def _needs_a_host(name: str):
    def service(self, *args, **kwargs):
        raise HyVideoError(f"host.{name}: no host is installed. The hyvideo nodes run inside ComfyUI; "
                           "outside it, install a host first with nodes.host.install_host(...).")
    service.__name__ = service.__qualname__ = name
    return service


for _name in HOST_METHODS:
    if not hasattr(NoHost, _name):
        setattr(NoHost, _name, _needs_a_host(_name))
del _name


class HostProxy:
    """The module-level `host`: every attribute read, write and delete goes to the installed host."""

    __slots__ = ("_installed",)

    def __init__(self, installed):
        object.__setattr__(self, "_installed", installed)

    def __getattr__(self, name: str):
        return getattr(self._installed, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._installed, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._installed, name)

    def __repr__(self) -> str:
        return f"<hyvideo host: {self._installed!r}>"


def install_host(impl):
    """Make `impl` the host behind `host` and return the one it replaces. Routes that a NoHost
    recorded are registered on `impl` (the pack registers its routes when it is imported)."""
    previous = host._installed
    object.__setattr__(host, "_installed", impl)
    if isinstance(previous, NoHost) and not isinstance(impl, NoHost):
        for method, path, handler in previous.routes:
            impl.register_route(method, path, handler)
    return previous


host = HostProxy(ComfyHost() if comfyui_is_running() else NoHost())
