"""The text towers and the VAE under ComfyUI's memory manager (imported only inside ComfyUI).

A `ComponentPatcher` is the ModelPatcher subclass ComfyUI's manager loads, accounts for and evicts
for one of our components (the Llama tower, the CLIP tower, a VAE). Its "weights on the device" are
the component's Placement (hyvideo_core.runtime.placement, the one placement mechanism): loading
makes it resident on the main device, any eviction (partial or whole: our modules do not run half
on the GPU, unlike ComfyUI's cast-on-the-fly layers) releases it home, and `loaded_size` is what the
placement holds there. So loading another model frees ours, ours are loaded after the manager made
room for them, they stay resident between prompts like ComfyUI's own text encoders and VAEs until
something needs the room, and "Unload models" / POST /free release them.

ModelPatcher keeps its bookkeeping as attributes of the model it manages; it manages a small
stand-in module (`ManagedComponent`) rather than our component, so nothing is set on our modules.
"""
from __future__ import annotations

import weakref

import comfy.model_patcher
import comfy.patcher_extension
import torch

from hyvideo_core.run import module_bytes


class ManagedComponent(torch.nn.Module):
    """What ComfyUI's manager sees (and logs: 'Requested to load ManagedComponent'): the name of the
    component, no tensors of its own."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what


class PlacementPatcher(comfy.model_patcher.ModelPatcher):
    """What our two patchers share (the DiT's in native_model.py, the components' below): their
    weights are never patched in place, and unloading is `_release()` onto our placement;
    subclasses give `load`, `partially_load`, `partially_unload`, `loaded_size` and `_release`."""

    def current_loaded_device(self):
        return self.load_device if self.loaded_size() > 0 else self.offload_device

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        super().patch_model(device_to, lowvram_model_memory, load_weights=False)   # object patches only
        if load_weights:
            self.load(device_to, lowvram_model_memory, force_patch_weights, full_load=lowvram_model_memory == 0)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        super().unpatch_model(None, unpatch_weights=False)   # nothing of ours is patched in place
        if unpatch_weights and device_to is not None:
            self._release()

    def detach(self, unpatch_all=True):
        """Unload: release it from the device (unpatch_all=False, when a clone takes over the
        manager's entry or a clone is dropped: keep it where it is)."""
        self.eject_model()
        self.model_patches_to(self.offload_device)
        if unpatch_all:
            super().unpatch_model(None, unpatch_weights=False)
            self._release()
        for callback in self.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_DETACH):
            callback(self, unpatch_all)
        return self.model

    def _release(self) -> None:
        raise NotImplementedError


class ComponentPatcher(PlacementPatcher):
    """One per Placement of a text tower or VAE; holds the placement weakly (the component's owner
    keeps it alive, and with it this patcher, see ComfyHost.place_components)."""

    @classmethod
    def for_placement(cls, placement) -> "ComponentPatcher":
        patcher = cls(ManagedComponent(placement.what), placement.main, placement.offload,
                      size=module_bytes(placement.module))
        patcher.placement_ref = weakref.ref(placement)
        return patcher

    def clone(self):
        twin = super().clone()
        twin.placement_ref = self.placement_ref
        return twin

    @property
    def placement(self):
        ref = self.__dict__.get("placement_ref")   # not yet set while ModelPatcher.__init__ runs
        return None if ref is None else ref()

    def model_size(self):
        placement = self.placement
        return self.size if placement is None else module_bytes(placement.module)

    def loaded_size(self):
        placement = self.placement
        return 0 if placement is None or placement.state != "resident" else module_bytes(placement.module)

    def component_state(self) -> dict:
        """Where the component is, for tests and reports."""
        placement = self.placement
        return {"what": self.model.what, "state": None if placement is None else placement.state,
                "loaded_bytes": self.loaded_size(), "total_bytes": self.model_size()}

    # -- ComfyUI's loading protocol, onto the placement (whole: our modules do not run half on the GPU)
    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        self._resident()
        for callback in self.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_LOAD):
            callback(self, device_to, lowvram_model_memory, force_patch_weights, full_load)

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        before = self.loaded_size()
        self._resident()          # whole: the budget ComfyUI offers does not split our modules
        return max(0, self.loaded_size() - before)

    def partially_unload(self, device_to, memory_to_free=0):
        before = self.loaded_size()
        self._release()
        return before

    def _resident(self) -> None:
        placement = self.placement
        if placement is not None:
            placement.resident()

    def _release(self) -> None:
        placement = self.placement
        if placement is not None and placement.state == "resident":
            placement.release()
