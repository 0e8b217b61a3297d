"""ComfyHost: the pack's host inside a running ComfyUI (folder_paths, comfy.*, server).

Memory goes through ComfyUI's own manager (comfy.model_management), never by patching it: every
DiT the pack loads gets one `HyVideoPatcher` (native_model.py, a ModelPatcher subclass) that is
handed to `load_models_gpu` like any native model. So ComfyUI's accounting (current_loaded_models)
lists it with the bytes our placement holds on the GPU, its eviction (`free_memory`, which a native
model's load and "Unload models" / POST /free run) releases or block-swaps it, and the same patcher,
cloned, is the diffusion model of the native MODEL (`native_model`).
"""
from __future__ import annotations

import logging
import os
import sys
import weakref
from contextlib import contextmanager
from typing import Callable

import torch

from hyvideo_core.errors import CancelledError, InvalidInputError

from ..folders import (MODEL_EXTENSIONS, list_input_files, missing_input_error, missing_model_error, scan_model_dirs,
                       scan_model_files)

log = logging.getLogger(__name__)

PREVIEW_MAX_SIZE = 512  # longest side of the latent previews sent to the browser


class ComfyProgress:
    def __init__(self, host: "ComfyHost", total: int, node_id: str | None):
        import comfy.utils
        self.host = host
        self.bar = comfy.utils.ProgressBar(int(total), node_id=node_id)

    def update(self, step: int, total: int | None = None, preview_rgb=None) -> None:
        preview = None
        if preview_rgb is not None:
            from PIL import Image

            from . import preview_array
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
        self._patchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # LoadedDiT -> its patcher
        self._others: weakref.WeakSet = weakref.WeakSet()   # other unloadables: unload() on unload_all
        self._components: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Placement -> its patcher
        self.routes: list[tuple[str, str, Callable]] = []

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
        """(free, total) bytes; with --reserve-vram the total leaves that much out (the budget our
        planner may fill)."""
        device = device or self._mm.get_torch_device()
        free, total = int(self._mm.get_free_memory(device)), int(self._mm.get_total_memory(device))
        if torch.device(device).type != "cpu" and _reserve_vram_given():
            total = max(0, total - int(self._mm.extra_reserved_memory()))
        return free, total

    def free_memory(self) -> None:
        self._mm.soft_empty_cache()

    def free_device_memory(self, nbytes: int, device: torch.device) -> None:
        """Before this pack's own sampler / text towers / VAE use `device`: ComfyUI's manager moves
        other models away until `nbytes` are free (as it does before a native model runs), keeping
        our DiTs it lists (their placement is the run layer's). A DiT of ours it does not list (it
        evicted it, or POST /free) is handed back to it first (load_models_gpu, where it stands),
        since the run layer may place it right after this call: then the room asked for counts its
        weights plus the rest of the request. On the CPU ComfyUI frees nothing (as for its own)."""
        device = torch.device(device)
        ours = [p for p in self._patchers.values() if _same_device(p.load_device, device)]
        listed = [entry for entry in self._mm.current_loaded_models
                  if entry.model is not None and any(entry.model.is_clone(p) for p in ours)]
        unlisted = [p for p in ours if not any(entry.model.is_clone(p) for entry in listed)]
        if unlisted:
            weights = sum(p.model_size() - p.loaded_size() for p in unlisted)
            self._mm.load_models_gpu(unlisted, memory_required=max(0, int(nbytes) - weights))
        elif device.type != "cpu":
            self._mm.free_memory(int(nbytes), device, keep_loaded=listed)

    def place_components(self, placements, nbytes: int, device: torch.device) -> None:
        """Before a text tower or the VAE runs: ComfyUI's manager loads them (their ComponentPatcher,
        components.py) after freeing others' models for them plus `nbytes` of activations, and lists
        them; they stay resident until it needs the room, like ComfyUI's own encoders and VAEs."""
        patchers = [self.component_patcher(p) for p in placements]
        if patchers:
            self._mm.load_models_gpu(patchers, memory_required=int(nbytes))

    def component_patcher(self, placement):
        """The one ComponentPatcher of a text tower's or VAE's Placement (it lives as long as that)."""
        patcher = self._components.get(placement)
        if patcher is None:
            from .components import ComponentPatcher
            patcher = self._components[placement] = ComponentPatcher.for_placement(placement)
        return patcher

    def memory_mode(self) -> str:
        """ComfyUI's --novram / --lowvram / --highvram (and --gpu-only) as one of the run layer's
        MEMORY_MODES; the sampler applies it to its block swap (run.swap_for_memory_mode)."""
        state = self._mm.vram_state
        states = self._mm.VRAMState
        if state == states.NO_VRAM:
            return "none"
        if state == states.LOW_VRAM:
            return "low"
        if state == states.HIGH_VRAM:
            return "high"
        return "normal"

    def register_unloadable(self, obj) -> None:
        """Hand `obj` to ComfyUI's memory manager (weakly: it does not keep it alive). A loaded DiT
        gets its HyVideoPatcher, loaded through `load_models_gpu` where it stands; anything else is
        unloaded (`obj.unload()`) by `unload_all`."""
        if _is_loaded_dit(obj):
            self._mm.load_models_gpu([self.patcher_for(obj)])
        else:
            self._others.add(obj)

    def unload_all(self) -> None:
        """Release this pack's models from the main device (what ComfyUI's manager does when it
        unloads them); their entries in ComfyUI's accounting then read 0 bytes loaded."""
        for patcher in [*self._patchers.values(), *self._components.values()]:
            patcher.detach(unpatch_all=True)
        for obj in list(self._others):
            obj.unload()
        self.free_memory()

    def patcher_for(self, loaded):
        """The one HyVideoPatcher of a LoadedDiT (created on first use; it lives as long as the DiT)."""
        patcher = self._patchers.get(loaded)
        if patcher is None:
            from .native_model import HyVideoPatcher
            patcher = self._patchers[loaded] = HyVideoPatcher.for_dit(loaded)
        return patcher

    def native_model(self, model, shift: float = 7.0, cache=None):
        """A ComfyUI MODEL (a clone of the DiT's patcher) that runs `model` (a HyVideoModel handle:
        its LoRAs, block swap and budget) with flow shift `shift` and an optional CacheRequest."""
        from .native_model import native_clone
        return native_clone(self.patcher_for(model.loaded), model, shift, cache)

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


def _is_loaded_dit(obj) -> bool:
    return hasattr(obj, "transformer") and hasattr(obj, "placement") and hasattr(obj, "sync_loras")


def _same_device(a, b) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _reserve_vram_given() -> bool:
    args = getattr(sys.modules.get("comfy.cli_args"), "args", None)
    return getattr(args, "reserve_vram", None) is not None


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


