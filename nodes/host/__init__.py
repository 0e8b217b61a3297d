"""The only package that talks to ComfyUI (folder_paths, comfy.*, server).

Node code uses the package-level `host` and nothing else from the host application:

    from .host import host
    path = host.full_path("diffusion_models", unet_name)   # clear error naming the folders searched
    bar = host.progress(total=steps, node_id=unique_id)
    bar.update(step, preview_rgb=frame)                     # also raises if the user pressed Cancel
    main, offload = host.devices()
    with host.interruptible():                              # engine CancelledError -> host's interrupt
        ...
    native = host.native_model(handle, shift=7.0)           # a ComfyUI MODEL running our DiT

`host` forwards every attribute read and write to the installed host, so node modules keep the
object they imported while the host behind it changes (`install_host`). Inside a running ComfyUI the
installed host is a ComfyHost (comfy_host.py), created when the pack is imported; its models take
part in ComfyUI's own memory management through a ModelPatcher subclass (native_model.py). Anywhere
else it is a NoHost until someone calls `install_host(...)` (the tests install their standalone
host): the pack still imports (routes are recorded and handed to the next host installed, model
lists are empty), and every other service raises a HyVideoError saying the nodes run inside ComfyUI.

Modules: this file (the host protocol, NoHost, the forwarding `host`), comfy_host.py (ComfyHost:
folders, progress, interrupts, devices, memory through comfy.model_management), native_model.py
(imported only inside ComfyUI: the BaseModel adapter and the DiT's ModelPatcher subclass),
components.py (imported only inside ComfyUI: the text towers' and the VAE's ModelPatcher subclass).
"""
from __future__ import annotations

import sys
from typing import Callable

from hyvideo_core.errors import HyVideoError

from ..folders import MODEL_EXTENSIONS
from .comfy_host import ComfyHost  # imports ComfyUI's modules only when a ComfyHost is created


# What node code may ask of a host (besides `name` and `routes`); every host implements all of it.
HOST_METHODS = (
    "folders", "filenames", "full_path", "model_dirs", "full_dir_path", "comfy_root",
    "output_dir", "input_dir", "input_files", "input_path",
    "progress", "check_interrupt", "interruptible",
    "devices", "device_memory", "free_memory", "free_device_memory", "place_components", "memory_mode",
    "register_unloadable", "unload_all",
    "native_model", "register_route",
)


def preview_array(rgb) -> "object":
    """A preview frame (tensor/array [H, W, 3], float 0..1 or uint8) -> uint8 numpy [H, W, 3]."""
    from hyvideo_core.video import frames_to_uint8
    return frames_to_uint8(rgb[None], name="preview")[0]


def comfyui_is_running() -> bool:
    # Importing comfy.model_management outside a running ComfyUI would parse sys.argv and pick
    # devices; ComfyUI always imports both of these itself before it loads any pack.
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


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
