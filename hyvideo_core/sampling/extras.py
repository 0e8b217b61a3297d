"""Long-video and guidance extras of a run (issue 18): RIFLEx, CFG-Zero* and Enhance-A-Video.

All are off by default, and off changes nothing (the model is not touched). The options live in
SamplingOptions (`riflex_index`, `cfg_zero_star`, `zero_init_steps`, `enhance_weight`);
`SamplingExtras` carries them from the Sampling Extras node to the sampler. For one run the
loop installs what they need on the model from outside and restores it after (`installed_extras`):
- RIFLEx: `model.rope_options` (rope.RopeOptions), read when the RoPE table of the whole
  sequence is built, before any parallel split (so the shards get the same rows);
- Enhance-A-Video: `model.attention` wrapped by enhance.EnhanceAttention. Under sequence
  parallelism its per-frame matrices would span ranks, so it is refused before the first step;
  CFG parallel alone is fine (the score is per sample);
- CFG-Zero* lives in the guidance (guidance.py) and needs nothing on the model.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import InvalidInputError, finite_number
from ..model.rope import check_riflex_index, riflex_applies, riflex_period
from .enhance import EnhanceAttention
from .guidance import GuidanceSettings

TRAINED_FRAMES = 129            # the longest videos of HunyuanVideo's training
RIFLEX_RECOMMENDED = 4          # HunyuanVideo's intrinsic temporal frequency (N_k = 50 latent frames)


@dataclass(frozen=True)
class SamplingExtras:
    """The extras as one value (the node's HYVIDEO_EXTRAS); `apply` puts them into options."""

    riflex_index: int = 0           # 0 = off; 4 for HunyuanVideo (applies past 50 latent frames)
    cfg_zero_star: bool = False     # CFG-Zero*'s optimised scale (true CFG only)
    zero_init_steps: int = 0        # the first N steps output zero velocity
    enhance_weight: float = 0.0     # Enhance-A-Video weight; 0 = off (official demo: 4)

    def apply(self, options):
        """`options` (SamplingOptions) with these fields replaced."""
        return dataclasses.replace(options, **dataclasses.asdict(self))

    def check(self) -> "SamplingExtras":
        """Raise InvalidInputError naming a bad field (the model-dependent checks come at sampling)."""
        _check_own_fields(self.riflex_index, self.enhance_weight)
        GuidanceSettings(cfg_zero_star=self.cfg_zero_star, zero_init_steps=self.zero_init_steps).check()
        return self


def check_extras(options) -> None:
    """The extras' own checks (model-independent), InvalidInputError naming the parameter."""
    _check_own_fields(options.riflex_index, options.enhance_weight)
    options.guidance.check()     # cfg_zero_star, zero_init_steps


def _check_own_fields(index, enhance_weight) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InvalidInputError(f"riflex_index: must be an integer >= 0 (0 = off, 4 for HunyuanVideo), got {index!r}.")
    weight = finite_number("enhance_weight", enhance_weight, "0 turns Enhance-A-Video off.")
    if weight < 0:
        raise InvalidInputError(f"enhance_weight: must be >= 0 (0 = off; the official demo uses 4), got {weight}.")


def sequence_parallel_degree(model) -> int:
    config = getattr(getattr(model, "parallel", None), "config", None)
    return int(getattr(config, "sp_degree", 1) or 1)


def check_for_run(model, options, latent_shape, schedule, note) -> None:
    """Model- and size-dependent checks and notes, before the first step. `latent_shape` is the
    generated latent [B, C, T, h, w]; `note(message)` records a note."""
    check_extras(options)
    config = model.config
    frames = latent_shape[2] // config.patch_size[0]
    dim, theta = config.rope_dims[0], config.rope_theta
    index = check_riflex_index(options.riflex_index, dim)
    if index:
        if not hasattr(model, "rope_options"):
            raise InvalidInputError("riflex_index: this model does not read RoPE options; use 0.")
        if not riflex_applies(index, frames, dim, theta):
            period = riflex_period(index, dim, theta)
            note(f"riflex_index={index} changes nothing at {frames} latent frames: RIFLEx applies past its "
                 f"period of {period} latent frames ({4 * period + 1} frames or more)")
    elif dim // 2 >= RIFLEX_RECOMMENDED and riflex_applies(RIFLEX_RECOMMENDED, frames, dim, theta):
        note(f"{frames} latent frames is past {riflex_period(RIFLEX_RECOMMENDED, dim, theta)}, where HunyuanVideo's "
             f"motion starts to repeat; riflex_index={RIFLEX_RECOMMENDED} (RIFLEx) avoids that")
    elif dim // 2 >= RIFLEX_RECOMMENDED and 4 * (frames - 1) + 1 > TRAINED_FRAMES:
        period = riflex_period(RIFLEX_RECOMMENDED, dim, theta)
        note(f"{4 * (frames - 1) + 1} frames is past the {TRAINED_FRAMES} HunyuanVideo was trained on; from "
             f"{4 * period + 1} frames on its motion repeats, which riflex_index={RIFLEX_RECOMMENDED} (RIFLEx) "
             "avoids (below that it changes nothing)")
    g = options.guidance
    if g.cfg_zero_star and not g.true_cfg:
        note(f"cfg_zero_star applies to true CFG only (cfg_scale > 1); at cfg_scale={g.cfg_scale:g} it is not used")
    if g.zero_init_steps:
        if g.zero_init_steps >= schedule.end:
            raise InvalidInputError(
                f"zero_init_steps={g.zero_init_steps} zeroes every step of this run (it ends at step "
                f"{schedule.end}); give fewer (CFG-Zero*'s HunyuanVideo demo zeroes 2 of 50).")
        if g.zero_init_steps <= schedule.start:
            note(f"zero_init_steps={g.zero_init_steps} is not used: this run starts at step {schedule.start}")
    if options.enhance_weight:
        if sequence_parallel_degree(model) > 1:
            raise InvalidInputError(
                "enhance_weight: Enhance-A-Video is not supported under sequence parallelism (ulysses/ring degree "
                f"{sequence_parallel_degree(model)}): its per-frame attention spans the ranks' shards. Set "
                "enhance_weight to 0 or run on one device (CFG parallel alone is fine).")
        if not hasattr(model, "attention"):
            raise InvalidInputError("enhance_weight: this model has no attention backend to wrap; use 0.")
        if frames == 1:
            note("enhance_weight has no effect on a single latent frame (no cross-frame attention)")


@contextmanager
def installed_extras(model, options, latent_shape) -> Iterator[None]:
    """RIFLEx and Enhance-A-Video on `model` for the block; what was there is restored after.
    Nothing is touched for the options that are off. The Enhance-A-Video wrapper learns each
    forward's frame and image-token counts from its input (a forward pre-hook), so a forward over
    part of the video (a context window) gets its own."""
    previous_rope = getattr(model, "rope_options", None)
    previous_attention = getattr(model, "attention", None)
    hook = None
    if options.riflex_index:
        model.rope_options = dataclasses.replace(previous_rope, riflex_index=options.riflex_index)
    if options.enhance_weight:
        wrapper = EnhanceAttention(previous_attention, options.enhance_weight, model.grid(latent_shape))

        def take_grid(module, args, kwargs):
            x = args[0] if args else kwargs["x"]
            wrapper.set_grid(module.grid(x.shape))

        hook = model.register_forward_pre_hook(take_grid, with_kwargs=True)
        model.attention = wrapper
    try:
        yield
    finally:
        if options.riflex_index:
            model.rope_options = previous_rope
        if hook is not None:
            hook.remove()
            model.attention = previous_attention
