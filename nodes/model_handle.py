"""What flows on the HYVIDEO_MODEL and HYVIDEO_VAE sockets: a loaded model plus what to do with it.

ComfyUI caches node outputs, so every node downstream of the loader gets the *same* loaded
transformer on every run. Anything that changes how it is used (LoRAs, block swapping) is
therefore declarative: a LoRA node returns a new handle that lists one more LoRA, and the sampler
hands the handle's LoRAs and swap to the run layer, which makes the shared transformer carry
exactly those (applying, re-weighting or removing them in place, never reloading).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from hyvideo_core.lora import LoraSpec
from hyvideo_core.run import LoadedDiT, PersistentGroup, SwapRequest


@dataclass(frozen=True)
class HyVideoModel:
    loaded: LoadedDiT
    swap: SwapRequest = SwapRequest()
    budget_gb: float | None = None
    loras: tuple[LoraSpec, ...] = ()
    parallel: PersistentGroup | None = None     # from the Parallel node: sample on several devices

    @property
    def transformer(self):
        return self.loaded.transformer

    @property
    def main(self) -> torch.device:
        return self.loaded.main

    def with_lora(self, spec: LoraSpec) -> "HyVideoModel":
        return replace(self, loras=self.loras + (spec,))


@dataclass(frozen=True)
class HyVideoVAE:
    """The VAE waits on the offload device and visits the main device while it works."""

    vae: object                 # hyvideo_core.HunyuanVideoVAE
    main: torch.device
    offload: torch.device
    summary: str

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype


@dataclass(frozen=True)
class HyVideoVision:
    """The LLaVA vision tower the Text Encoder Loader loads with the Llama (image to video)."""

    path: str                   # clip_vision/llava_llama3_vision.safetensors or a LLaVA folder
    name: str                   # as picked in the node
