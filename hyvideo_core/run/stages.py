"""The stages of a run, shared by the CLI and the nodes: encode, sample, decode, write.

Each stage places its model through the one placement mechanism, asks the host for room first
(inside ComfyUI: ComfyUI moves its own models away; alone: nothing to do), and turns a device
out-of-memory into an OutOfMemoryError that carries the planner's advice (the OOM policy).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from ..conditioning.image import ImageConditioning, check_mode
from ..conditioning.image import fit_image as fit_first_frame
from ..errors import InvalidInputError
from ..runtime.devices import free_bytes, is_cuda, main_device, total_bytes
from ..runtime.oom import oom_guard
from ..runtime.placement import Placement
from ..sampling import SamplingHooks, SamplingOptions, SamplingResult, sample
from ..sampling.latent_format import LATENT_CHANNELS
from ..sampling.noise import plan_from_latent
from .dit import LoadedDiT, RunShape
from .memory import (PlacementPlan, budget_bytes, check_fits, device_capacity, plan_placement,
                     swap_for_memory_mode)
from .settings import CacheRequest, SwapRequest


class RunHost(Protocol):
    """What a stage needs from its surroundings (ComfyUI's host implements it too).

    - `free_device_memory(nbytes, device)`: room for the DiT's run (others' models moved away);
    - `place_components(placements, nbytes, device)`: before the text towers or the VAE run: the
      host may take them into its own memory management (ComfyUI: loaded resident through its
      manager, which frees others first, lists them, and evicts them when something else needs
      the room); alone nothing happens and they visit the device for their stage only;
    - `memory_mode()`: one of MEMORY_MODES (ComfyUI's --lowvram / --novram / --highvram), which
      `swap_for_memory_mode` applies to the block swap asked for.
    """

    def devices(self) -> tuple[torch.device, torch.device]: ...
    def device_memory(self, device: torch.device) -> tuple[int, int]: ...
    def free_device_memory(self, nbytes: int, device: torch.device) -> None: ...
    def place_components(self, placements: Sequence[Placement], nbytes: int, device: torch.device) -> None: ...
    def memory_mode(self) -> str: ...


class LocalHost:
    """A run on its own (CLI, scripts): one main device, the CPU as offload, nobody else to ask."""

    def __init__(self, device: str | torch.device = "auto"):
        self.main = main_device(device)

    def devices(self) -> tuple[torch.device, torch.device]:
        return self.main, torch.device("cpu")

    def device_memory(self, device: torch.device) -> tuple[int, int]:
        if not is_cuda(device):
            return 0, 0
        return int(free_bytes(device) or 0), int(total_bytes(device) or 0)

    def free_device_memory(self, nbytes: int, device: torch.device) -> None:
        return None

    def place_components(self, placements, nbytes: int, device: torch.device) -> None:
        return None          # nobody else to ask: the components visit the device for their stage

    def memory_mode(self) -> str:
        return "normal"


@dataclass
class SampleOutcome:
    result: SamplingResult
    placement: PlacementPlan
    notes: list[str] = field(default_factory=list)


def run_shape(options: SamplingOptions, size: tuple[int, int, int] | None, init_latent) -> RunShape:
    """The size the memory plan is for. With context windows the DiT sees one window at a time, so the
    frames are the window's (the full-length latent and the blend buffers are small beside the activations)."""
    cfg_batched = options.cfg_scale > 1 and options.cfg_mode == "batched"
    if init_latent is not None:
        plan = plan_from_latent(tuple(init_latent.shape))
        width, height, frames, batch = plan.width, plan.height, plan.frames, plan.batch
    else:
        (width, height, frames), batch = size, 1
    if options.context is not None:
        frames = options.context.planned_frames(frames)
    return RunShape(width, height, frames, batch, cfg_batched)


def sample_video(dit: LoadedDiT, embeds, options: SamplingOptions, *, size: tuple[int, int, int] | None = None,
                 init_latent=None, keyframe_latent=None, loras=(), cache=None, hooks: SamplingHooks | None = None,
                 swap: SwapRequest = SwapRequest(), budget_gb: float | None = None,
                 host: RunHost | None = None, image=None) -> SampleOutcome:
    """LoRAs synced, the request refused when the planner says it cannot fit the device (memory.check_fits),
    the DiT placed for this video, then the one sampling loop under the OOM policy. `cache`: a cache
    policy or a CacheRequest (built here). `image`: a conditioning.ImageConditioning (image-to-video);
    the plan then counts the embeds' real token count (image tokens + text)."""
    host = host or LocalHost(dit.main)
    notes = [text] if (text := dit.sync_loras(tuple(loras))) else []
    shape = run_shape(options, size, init_latent)
    _, total = host.device_memory(dit.main)
    budget = budget_bytes(budget_gb, dit.main, total or None)
    config = dit.transformer.config
    swap, mode_note = swap_for_memory_mode(swap, host.memory_mode(), config.double_blocks, config.single_blocks)
    notes += [mode_note] if mode_note else []
    inputs = dit.plan_inputs(shape)
    if image is not None:
        inputs = inputs.replace(text_tokens=max(inputs.text_tokens, prompt_tokens(embeds)))
    placement = plan_placement(inputs, swap, budget, dit.main)
    check_fits(placement, dit.main, device_capacity(dit.main, total))   # refuse before the first step
    notes += [placement.note] if placement.note else []
    host.free_device_memory(placement.plan.peak, dit.main)
    if placement.swap is None:
        dit.placement.resident()
    else:
        notes.append(dit.placement.swapped(placement.swap).summary())
    given = {} if init_latent is not None else dict(zip(("width", "height", "frames"), size))
    cache = cache.build() if isinstance(cache, CacheRequest) else cache
    with oom_guard(placement.plan.inputs, stage="sampling", budget=budget, device=dit.main):
        result = sample(dit.transformer, embeds, options, **given, init_latent=init_latent,
                        keyframe_latent=keyframe_latent, cache=cache, hooks=hooks, device=dit.main, image=image)
    notes += list(result.notes)
    if result.cache is not None:
        notes.append(str(result.cache))
    return SampleOutcome(result, placement, notes)


def prompt_tokens(embeds) -> int:
    """The longest prompt's token count (I2V: image tokens + text), what the DiT's text stream holds."""
    found = [getattr(getattr(embeds, role, None), "text_states", None) for role in ("positive", "negative")]
    return max((int(states.shape[1]) for states in found if isinstance(states, torch.Tensor)), default=0)


def encode_prompts(encoder, prompt: str, negative: str | None, template, host: RunHost | None = None,
                   image=None, image_embed_interleave: int = 1):
    """Both prompts in one call; the towers visit the main device one at a time. `image` (I2V, a
    PIL image or [3, H, W] in 0..1) needs an encoder with a vision tower; interleave 4 for
    token_replace, 2 for latent_concat."""
    from ..text.memory import encode_device_bytes
    host = host or LocalHost(encoder.device)
    with_vision = image is not None and getattr(encoder, "vision", None) is not None   # else encode() says why
    towers = ("llm", "clip", "vision") if with_vision else ("llm", "clip")
    host.place_components([encoder.placement(t) for t in towers],
                          encode_device_bytes(encoder, template=template), encoder.device)
    if image is None:
        return encoder.encode(prompt, negative_prompt=negative, template=template)
    return encoder.encode(prompt, negative_prompt=negative, template=template, image=image,
                          image_embed_interleave=image_embed_interleave)


# The one Placement of each VAE module (per devices), so a host can manage it across stages.
_VAE_PLACEMENTS: "weakref.WeakKeyDictionary[torch.nn.Module, Placement]" = weakref.WeakKeyDictionary()


def vae_placement(vae, main: torch.device, offload: torch.device) -> Placement:
    placement = _VAE_PLACEMENTS.get(vae)
    if placement is None or (placement.main, placement.offload) != (torch.device(main), torch.device(offload)):
        if placement is not None:
            placement.release()
        placement = _VAE_PLACEMENTS[vae] = Placement(vae, main, offload, what="VAE")
    return placement


@contextmanager
def vae_visit(vae, main: torch.device, offload: torch.device, host: RunHost | None = None):
    """The VAE on the main device for the block (the host asked for room first, or managing it),
    home again afterwards unless the host keeps it resident."""
    host = host or LocalHost(main)
    placement = vae_placement(vae, main, offload)
    host.place_components([placement], 0, torch.device(main))
    with placement.visit():
        yield vae


@dataclass
class DecodeOutcome:
    video: torch.Tensor              # [B, 3, F, H, W] on the CPU, not clamped
    description: str                 # which tiles worked, and any out-of-memory retries


def decode_latent(vae, latent: torch.Tensor, tiling, *, main: torch.device, offload: torch.device,
                  progress: Callable[[int, int], None] | None = None, host: RunHost | None = None) -> DecodeOutcome:
    """The VAE visits the main device for the decode; an out-of-memory retries with smaller tiles."""
    with vae_visit(vae, main, offload, host):
        video = vae.decode(latent, tiling=tiling, output_device="cpu", progress=progress)
    report = vae.last_decode_report
    return DecodeOutcome(video, report.describe() if report is not None else "decoded")


def encode_video(vae, video: torch.Tensor, tiling, *, main: torch.device, offload: torch.device,
                 host: RunHost | None = None) -> torch.Tensor:
    """Frames [B, 3, F, H, W] -> raw latent (the posterior's mode), with the VAE visiting the main device."""
    with vae_visit(vae, main, offload, host):
        posterior = vae.encode(video, tiling=tiling)
        return posterior.mode().float().cpu()


def encode_first_frame(vae, image: torch.Tensor, width: int, height: int, mode: str = "auto",
                       stability: bool = True, *, main, offload, host: RunHost | None = None,
                       tiling="auto") -> ImageConditioning:
    """Image to video: the image fitted to width x height (snapped to 16, conditioning.fit_first_frame),
    VAE-encoded (the posterior's mode) with the VAE visiting `main`; the ImageConditioning the
    sampler takes."""
    check_mode(mode)
    pixels, notes = fit_first_frame(image, width, height)
    latent = encode_video(vae, pixels, tiling, main=main, offload=offload, host=host)
    if latent.ndim != 5 or latent.shape[1] != LATENT_CHANNELS or latent.shape[2] != 1:
        raise InvalidInputError(f"image: the VAE returned a latent {list(latent.shape)} for one frame, expected "
                                "[1, 16, 1, h, w]; is this the HunyuanVideo VAE?")
    return ImageConditioning(latent.float().cpu(), mode, stability, pixels.shape[-1], pixels.shape[-2], notes)
