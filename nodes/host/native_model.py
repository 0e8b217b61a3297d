"""Our DiT as a native ComfyUI model, managed by ComfyUI's memory manager (imported only inside ComfyUI).

Three pieces, all built on ComfyUI's public classes (comfy.model_base, comfy.model_patcher):

- `DiTAdapter`: the `diffusion_model` of the native model. It takes what ComfyUI's native
  HunyuanVideo model passes its diffusion model (`x, timestep, context, y, guidance,
  attention_mask, transformer_options`; model_base.HunyuanVideo.extra_conds makes `y` from
  pooled_output, `c_crossattn` from the text states, `guidance` from the conditioning's guidance,
  default 6.0) and calls our transformer (timestep 0..1000, guidance x 1000). It runs ComfyUI's
  DIFFUSION_MODEL wrappers (EasyCache), and tells an installed cache policy (TeaCache, first-block
  cache) the step and the branch (cond / uncond, and the context window) of every forward.
- `HyVideoNativeModel`: comfy.model_base.HunyuanVideo without its own network: HunyuanVideo's
  latent format (scale 0.476986), flow model sampling with our shift, and `memory_required` from
  our planner (activations + latents of the shape ComfyUI asks about).
- `HyVideoPatcher`: the ModelPatcher subclass ComfyUI's manager loads and unloads. Its "weights
  on the device" are our Placement: `partially_load` places the DiT (resident when ComfyUI's
  budget holds it, else the run layer's planner picks the block swap for that budget; fixed
  counts from a Block Swap node are kept), `partially_unload` swaps more blocks out, `detach`
  releases it, `loaded_size` reports what the placement holds on the device. One patcher per
  loaded DiT; each native MODEL is a clone carrying a `NativeRun` (the handle's LoRAs, swap and
  budget, the cache request), whose OUTER_SAMPLE wrapper syncs the LoRAs before ComfyUI loads the
  model and runs the cache policy for exactly that sampling run.
"""
from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models
import torch

from hyvideo_core.errors import HyVideoError, InvalidInputError, OutOfMemoryError
from hyvideo_core.run import RunShape, SwapRequest, budget_bytes, module_bytes, plan_placement
from hyvideo_core.sampling import installed

from .components import PlacementPatcher

log = logging.getLogger(__name__)

RUN_KEY = "hyvideo_run"             # the NativeRun attachment of a native MODEL
WRAPPER_KEY = "hyvideo"             # our OUTER_SAMPLE wrapper
FALLBACK_SHAPE = RunShape(16, 16, 1)  # for a swap chosen before any sampling shape is known
UNSUPPORTED_CONDS = ("txt_byt5", "guiding_frame_index", "ref_latent")


class DiTAdapter(torch.nn.Module):
    """ComfyUI's diffusion-model call -> our transformer's forward."""

    def __init__(self, loaded):
        super().__init__()
        self.dit = loaded.transformer          # a child module: state_dict / .to() see our weights
        self._loaded = weakref.ref(loaded)     # the LoadedDiT (its placement and LoRAs), not kept alive
        self._warned: list[str] = []           # the block replacements last reported as unused

    def loaded_or_none(self):
        return self._loaded()

    @property
    def loaded(self):
        loaded = self._loaded()
        if loaded is None:
            raise HyVideoError("HunyuanVideo native MODEL: its model was unloaded (the loader loaded another "
                               "file); run the graph again.")
        return loaded

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.compute_dtype

    def forward(self, x, timestep, context, y=None, guidance=None, attention_mask=None, control=None,
                transformer_options={}, **kwargs):
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                            transformer_options)
        executor = comfy.patcher_extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers)
        return executor.execute(x, timestep, context, y, guidance, attention_mask, control, transformer_options,
                                **kwargs)

    def _forward(self, x, timestep, context, y, guidance, attention_mask, control, transformer_options, **kwargs):
        unsupported = sorted(k for k in (*UNSUPPORTED_CONDS, "control")
                             if (control if k == "control" else kwargs.get(k)) is not None)
        if unsupported:
            raise InvalidInputError(
                f"HunyuanVideo native MODEL: the conditioning carries {unsupported} (ControlNet / image-to-video "
                "inputs of ComfyUI's own HunyuanVideo models), which this pack's text-to-video DiT does not take. "
                "Use plain text CONDITIONING, or this pack's keyframe nodes.")
        if y is None:
            raise InvalidInputError(
                "HunyuanVideo native MODEL: the CONDITIONING has no pooled_output (CLIP-L's pooled vector). Encode "
                "with DualCLIPLoader type hunyuan_video, or use HunyuanVideo Embeds to Conditioning.")
        replaced = sorted(map(str, transformer_options.get("patches_replace", {}).get("dit", {})))
        if replaced and replaced != self._warned:
            self._warned = replaced
            log.warning("HunyuanVideo native MODEL: block replacements %s (patches_replace['dit'], made for "
                        "ComfyUI's own HunyuanVideo blocks) are not used by this pack's DiT; use this pack's "
                        "TeaCache / First Block Cache on HunyuanVideo To Native MODEL instead.", replaced[:4])
        model = self.dit
        policy = model.cache
        if policy is not None:
            policy.begin_step(_step_index(transformer_options), _branch(transformer_options))
        scale = None if guidance is None or not model.config.guidance_embed else guidance.float() * 1000.0
        return model(x, timestep.float(), context, _token_mask(attention_mask), y, scale)


def _token_mask(mask):
    """The conditioning's attention_mask as our DiT takes it (1 = a real token). Integer masks are
    that already; a floating one is 0/1 (a bool mask after ComfyUI's dtype cast), or additive (0
    keeps, a large negative value masks), as ComfyUI's own HunyuanVideo reads floating masks."""
    if mask is None or not mask.is_floating_point():
        return mask
    if bool(((mask == 0) | (mask == 1)).all()) and bool((mask == 1).any()):
        return mask.round().long()
    return (mask > -1.0).long()     # additive (an all-zero mask keeps every token)


def _step_index(options: dict) -> int:
    """The step of the sampling run this forward belongs to: the last sample sigma >= the current
    one (multi-stage solvers evaluate between two sample sigmas; they stay in that step)."""
    sigmas, current = options.get("sample_sigmas"), options.get("sigmas")
    if sigmas is None or current is None:
        return 0
    sigma = float(current.flatten()[0])
    at_or_above = int((sigmas.float() >= sigma - 1e-6 * max(1.0, sigma)).sum())
    return max(0, at_or_above - 1)


def _branch(options: dict) -> str:
    """'cond', 'uncond' or 'cond+uncond' (ComfyUI batches them), and the context window if any,
    so a cache policy keeps one state per branch and window."""
    kinds = set(options.get("cond_or_uncond") or [0])
    branch = "cond+uncond" if len(kinds) > 1 else ("uncond" if kinds == {1} else "cond")
    window = options.get("context_window")
    indices = getattr(window, "index_list", None)
    if indices:
        branch += f"@{indices[0]}-{indices[-1]}"
    return branch


class HyVideoNativeModel(comfy.model_base.HunyuanVideo):
    """ComfyUI's HunyuanVideo model class around our DiT (no network of its own is built)."""

    def __init__(self, loaded):
        config = comfy.supported_models.HunyuanVideo({"image_model": "hunyuan_video",
                                                      "disable_unet_model_creation": True})
        super().__init__(config, device=loaded.main)
        self.diffusion_model = DiTAdapter(loaded)
        self.hyvideo_shape: RunShape | None = None      # the last sampling shape ComfyUI asked about
        self._activation_bytes: dict[RunShape, int] = {}

    @property
    def loaded(self):
        return self.diffusion_model.loaded

    def memory_required(self, input_shape, cond_shapes={}):
        """Bytes besides the weights for a latent of `input_shape`, from our planner."""
        shape = _run_shape(input_shape)
        if shape is None:
            return super().memory_required(input_shape, cond_shapes=cond_shapes)
        self.hyvideo_shape = shape   # prepare_sampling asks for [2B, ...] then [B, ...] just before loading
        if shape not in self._activation_bytes:
            try:
                self._activation_bytes[shape] = non_weight_bytes(self.loaded, shape)
            except InvalidInputError as error:   # a size our planner does not price: ComfyUI's estimate
                log.warning("HunyuanVideo native MODEL: no memory estimate for %s (%s); using ComfyUI's.",
                            list(input_shape), error)
                self._activation_bytes[shape] = int(super().memory_required(input_shape, cond_shapes=cond_shapes))
        return self._activation_bytes[shape]

    def forget_estimates(self) -> None:
        """After a LoRA change (its adapters change the tensors the planner prices)."""
        self._activation_bytes.clear()


def _run_shape(input_shape) -> RunShape | None:
    """A ComfyUI latent shape [B, 16, T, H, W] -> the video size our planner takes."""
    if len(input_shape) != 5 or input_shape[3] % 2 or input_shape[4] % 2:
        return None
    b, _, t, h, w = (int(v) for v in input_shape)
    return RunShape(w * 8, h * 8, (t - 1) * 4 + 1, max(1, b))


def non_weight_bytes(loaded, shape: RunShape) -> int:
    """The planner's block activations + latents and text for `shape` (no swap: the same for any)."""
    plan = plan_placement(loaded.plan_inputs(shape), SwapRequest("off"), None, loaded.main).plan
    return int(plan.breakdown["block activations (peak)"] + plan.breakdown["latents + text"])


@dataclass(frozen=True)
class NativeRun:
    """What one native MODEL asks of the shared DiT: the handle (LoRAs, swap, budget) and a cache."""

    handle: object                 # nodes.model_handle.HyVideoModel
    cache: object | None = None    # hyvideo_core.run.CacheRequest

    def sample(self, executor, args, kwargs, steps: int):
        loaded = self.handle.loaded
        note = loaded.sync_loras(tuple(self.handle.loras))
        if note:
            log.info("HunyuanVideo native MODEL: %s", note)
        policy = self.cache.build() if self.cache is not None else None
        model = loaded.transformer
        with installed(model, policy if policy is not None else model.cache) as active:
            if active is not None:
                active.start_run(steps)
            try:
                return executor(*args, **kwargs)
            finally:
                if active is not None:
                    log.info("HunyuanVideo native MODEL: %s", active.report())
                    active.release()


def _outer_sample(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: around ComfyUI's whole sampling run (model loading included)."""
    guider = executor.class_obj
    run: NativeRun | None = guider.model_patcher.get_attachment(RUN_KEY)
    if run is None:
        return executor(*args, **kwargs)
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    if isinstance(guider.model_patcher.model, HyVideoNativeModel):
        guider.model_patcher.model.forget_estimates()    # the LoRAs about to be synced change the tensors
    return run.sample(executor, args, kwargs, max(0, sigmas.shape[-1] - 1))


def native_clone(patcher: "HyVideoPatcher", handle, shift: float, cache=None):
    """A native MODEL for `handle`: a clone of the DiT's patcher with its flow shift and run."""
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise InvalidInputError(f"shift: must be a number > 0 (the official default is 7.0), got {shift!r}.")
    model = patcher.clone()
    sampling = type(patcher.model.model_sampling)(patcher.model.model_config)
    sampling.set_parameters(shift=float(shift), multiplier=1000)
    model.add_object_patch("model_sampling", sampling)
    model.set_attachments(RUN_KEY, NativeRun(handle, cache))
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample)
    return model


class HyVideoPatcher(PlacementPatcher):
    """ComfyUI's manager sees our DiT through this; the placement does the moving (module docstring)."""

    @classmethod
    def for_dit(cls, loaded) -> "HyVideoPatcher":
        return cls(HyVideoNativeModel(loaded), load_device=loaded.main, offload_device=loaded.offload)

    # -- accounting --------------------------------------------------------------------------------
    @property
    def dit(self):
        return self.model.loaded

    def model_size(self):
        loaded = self.model.diffusion_model.loaded_or_none()
        return 0 if loaded is None else module_bytes(loaded.transformer)

    def loaded_size(self):
        """Bytes the placement holds on the main device: all of it when resident, the unswapped
        part plus the swap slots when swapping, nothing when released."""
        loaded = self.model.diffusion_model.loaded_or_none()
        if loaded is None or loaded.placement.state == "home":
            return 0
        total = module_bytes(loaded.transformer)
        swap = loaded.placement.swap
        if swap is None:
            return total
        swapped = sum(module_bytes(m) for m in swap.swapped_modules())
        return total - swapped + swap.report.slots * swap.report.slot_bytes

    def hyvideo_state(self) -> dict:
        """Where the DiT is, for tests and reports."""
        placement = self.dit.placement
        swap = placement.swap
        return {"state": placement.state, "loaded_bytes": self.loaded_size(), "total_bytes": self.model_size(),
                "swapped": None if swap is None else [swap.report.double, swap.report.single],
                "loras": [spec.lora.name for spec in self.dit.loras]}

    # -- ComfyUI's loading protocol, onto our placement -------------------------------------------
    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        self._place(math.inf if full_load or not lowvram_model_memory else lowvram_model_memory)
        for callback in self.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_LOAD):
            callback(self, device_to, lowvram_model_memory, force_patch_weights, full_load)

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        before = self.loaded_size()
        super().unpatch_model(None, unpatch_weights=False)   # object patches of the previous clone, back
        super().patch_model(load_weights=False)              # this clone's (e.g. model_sampling)
        self._place(before + extra_memory)
        return max(0, self.loaded_size() - before)

    def partially_unload(self, device_to, memory_to_free=0):
        """Give back `memory_to_free` bytes: swap more blocks out (or release it all)."""
        before = self.loaded_size()
        if before > memory_to_free:
            self._fit(before - memory_to_free)
        elif before:
            self._release()
        return before - self.loaded_size()

    # -- our placement -----------------------------------------------------------------------------
    def _release(self) -> None:
        loaded = self.model.diffusion_model.loaded_or_none()
        if loaded is not None:
            loaded.unload()

    def _place(self, weight_budget: float) -> None:
        """Place the DiT for a run given ComfyUI's byte budget for weights (inf = all of it)."""
        if self.patches:
            raise InvalidInputError(
                "HunyuanVideo native MODEL: a native LoRA loader patched it; this pack's DiT takes its LoRAs from "
                "HunyuanVideo LoRA Select before HunyuanVideo To Native MODEL (applied without reloading).")
        run: NativeRun | None = self.get_attachment(RUN_KEY)
        if run is None:
            return    # the manager registering a loaded DiT: it stays as the run layer placed it
        loaded, handle = self.dit, run.handle
        request = handle.swap
        if comfy.model_management.vram_state == comfy.model_management.VRAMState.NO_VRAM and request.mode != "fixed":
            weight_budget = 0    # --novram: every block streams (what the already-loaded bytes would not say)
        shape = self.model.hyvideo_shape or FALLBACK_SHAPE
        full = weight_budget >= module_bytes(loaded.transformer)
        if request.mode == "off" and full:
            loaded.placement.resident()
            return
        inputs = loaded.plan_inputs(shape).replace(unload_dit_for_decode=True)
        if request.mode == "fixed" or full:
            _, total = _device_memory(loaded.main)
            budget = budget_bytes(handle.budget_gb, loaded.main, total)
            self._install(plan_placement(inputs, request, budget, loaded.main))
            return
        # ComfyUI gives less than the whole model (--lowvram, --novram, a full GPU): the planner's
        # least swapping whose weights and swap slots fit that budget (and the handle's, if set).
        if handle.budget_gb:
            weight_budget = min(weight_budget, handle.budget_gb * 2**30 - non_weight_bytes(loaded, shape))
        self._fit(weight_budget, request)

    def _fit(self, weight_budget: float, request: SwapRequest | None = None) -> None:
        """The least swapping whose resident weights + slots fit `weight_budget` bytes; every block
        swapped (and txt_in) when nothing does."""
        loaded = self.dit
        run: NativeRun | None = self.get_attachment(RUN_KEY)
        request = request or (run.handle.swap if run is not None else SwapRequest("auto"))
        shape = self.model.hyvideo_shape or FALLBACK_SHAPE
        inputs = loaded.plan_inputs(shape).replace(unload_dit_for_decode=True)
        budget = int(max(0, weight_budget)) + non_weight_bytes(loaded, shape) + inputs.reserve
        auto = SwapRequest("auto", offload_txt_in=request.offload_txt_in, offload_img_in=request.offload_img_in,
                           prefetch=request.prefetch)
        try:
            chosen = plan_placement(inputs, auto, budget, loaded.main)
        except OutOfMemoryError:
            config = loaded.transformer.config
            everything = SwapRequest("fixed", config.double_blocks, config.single_blocks, offload_txt_in=True,
                                     offload_img_in=request.offload_img_in, prefetch=request.prefetch)
            chosen = plan_placement(inputs, everything, None, loaded.main)
        self._install(chosen)

    def _install(self, chosen) -> None:
        loaded = self.dit
        if chosen.note:
            log.info("HunyuanVideo native MODEL: %s", chosen.note)
        if chosen.swap is None:
            loaded.placement.resident()
        else:
            log.info("HunyuanVideo native MODEL: %s", loaded.placement.swapped(chosen.swap).summary())


def _device_memory(device: torch.device) -> tuple[int, int]:
    from . import host
    return host.device_memory(device)
