"""The HunyuanVideo DiT: embeddings, 20 double + 40 single blocks, final layer (SPEC 1).

Speed features are policies set from outside, never flags inside the blocks:
- `attention`: the backend object (see attention.py), chosen at load;
- `cache`: a cache policy whose `run(model, e: Embedded) -> img` replaces `run_blocks`
  (TeaCache, first-block cache);
- `placement`: a block placement policy whose `enter(block)` / `exit(block)` bracket every block
  (block swapping moves weights there; the default does nothing);
- `parallel`: `split(e)` after the embeddings and `gather(y, e)` after the final layer, around
  the token sequence (sequence parallelism, hyvideo_core.parallel; the default does nothing);
- `rope_options`: RoPE frequency options for a run (rope.RopeOptions: RIFLEx), read when the
  freqs of the whole sequence are built (before any parallel split);
- `image_condition`: how the DiT itself conditions on an image for a run (image_condition.py,
  exported by hyvideo_core.model). The default `ImageCondition()` changes nothing.
  `TokenReplace()` is HunyuanVideo-I2V's token_replace (16 channels, the T2V file's shapes): the
  image tokens of latent frame 0 are modulated with time_in(0) + vector_in(pooled), without
  guidance, in every double and single block. Text tokens and the final layer keep the normal
  vec. The blocks see it only through `BlockContext.first_tokens` (Leading pairs of modulation
  tensors, layers.py). Under sequence parallelism each rank applies it to the frame-0 tokens of
  its own shard. The sampling loop installs it for a run and puts the default back after; it
  also keeps latent frame 0 clean (SPEC_NEXT 2.3).
- I2V by input channels (config.VARIANTS): "i2v_concat" (33 = noise + image latent + mask, no
  guidance_in) and "keyframe_or_skyreels" (32 = noise + a 16-channel conditioning latent: the
  keyframe LoRA's widened model and SkyReels-V1 I2V, the same architecture) need no option. The
  caller concatenates the channels, and `x` must carry all of them.
- layer `codec` / `adapters` (see ops.py) for fp8, GGUF and runtime LoRA.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from .attention import SDPA, TokenLayout
from .blocks import BlockContext, DoubleBlock, FinalLayer, FirstTokens, SingleBlock, TokenRefiner
from .config import VARIANT_INPUTS, VARIANTS, DiTConfig
from .image_condition import ImageCondition
from .layers import TimestepEmbedder, vector_embedder
from .ops import default_ops
from .rope import RopeOptions, rope_freqs


class StayInPlace:
    """Default placement: blocks stay where they were loaded."""

    def enter(self, block: nn.Module) -> None:
        pass

    def exit(self, block: nn.Module) -> None:
        pass


class Unsplit:
    """Default `parallel` policy: one process holds the whole token sequence."""

    cfg_split = None

    def split(self, e: "Embedded") -> "Embedded":
        return e

    def gather(self, y: torch.Tensor, e: "Embedded") -> torch.Tensor:
        return y


@dataclass
class Embedded:
    """Everything `embed` computes once per forward."""

    img: torch.Tensor   # [B, N, hidden] patch tokens
    txt: torch.Tensor   # [B, L_txt, hidden] refined text tokens
    ctx: BlockContext
    grid: tuple[int, int, int]


class PatchEmbed(nn.Module):
    def __init__(self, config: DiTConfig, ops, **kw):
        super().__init__()
        p = config.patch_size
        self.proj = ops.Conv3d(config.in_channels, config.hidden_size, kernel_size=p, stride=p, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class HunyuanVideoTransformer(nn.Module):
    def __init__(self, config: DiTConfig, ops=default_ops, device=None, dtype=None):
        super().__init__()
        self.config = c = config
        kw = {"device": device, "dtype": dtype}
        self.img_in = PatchEmbed(c, ops, **kw)
        self.txt_in = TokenRefiner(c.text_dim, c.hidden_size, c.heads, c.refiner_blocks, c.timestep_freq_dim, ops, **kw)
        self.time_in = TimestepEmbedder(c.hidden_size, c.timestep_freq_dim, ops, **kw)
        self.vector_in = vector_embedder(c.pooled_text_dim, c.hidden_size, ops, **kw)
        if c.guidance_embed:
            self.guidance_in = TimestepEmbedder(c.hidden_size, c.timestep_freq_dim, ops, **kw)
        block_args = (c.hidden_size, c.heads, c.mlp_hidden, c.qkv_bias, ops)
        self.double_blocks = nn.ModuleList(DoubleBlock(*block_args, **kw) for _ in range(c.double_blocks))
        self.single_blocks = nn.ModuleList(SingleBlock(*block_args, **kw) for _ in range(c.single_blocks))
        patch_volume = c.patch_size[0] * c.patch_size[1] * c.patch_size[2]
        self.final_layer = FinalLayer(c.hidden_size, patch_volume * c.out_channels, ops, **kw)
        self.attention = SDPA()
        self.cache = None
        self.placement = StayInPlace()
        self.parallel = Unsplit()
        self.rope_options = RopeOptions()
        self.image_condition = ImageCondition()
        self.compute_dtype = dtype or torch.float32

    # -- public call -----------------------------------------------------------------------
    def forward(self, x, timestep, text_states, text_mask=None, text_states_2=None, guidance=None):
        """Velocity [B, out_channels, T, H, W] in x's dtype; timestep 0..1000, guidance = g*1000."""
        e = self.embed(x, timestep, text_states, text_mask, text_states_2, guidance)
        if self.cache is not None:
            img = self.cache.run(self, e)
        else:
            img, _ = self.run_blocks(e.img, e.txt, e.ctx)
        return self.unembed(img, e).to(x.dtype)

    @property
    def blocks(self) -> list[nn.Module]:
        """Double then single blocks, the order they run in."""
        return [*self.double_blocks, *self.single_blocks]

    # -- stages (cache policies compose these) ---------------------------------------------
    def embed(self, x, timestep, text_states, text_mask, text_states_2, guidance) -> Embedded:
        self._check_inputs(x, text_states, text_mask, text_states_2, guidance)
        dtype = self.compute_dtype
        batch = x.shape[0]
        t = _per_sample(timestep, batch, x.device, "timestep")
        text_states, text_mask = _trim_padding(text_states, text_mask)
        pooled = self.vector_in(text_states_2.to(dtype))
        vec = self.time_in(t, dtype) + pooled
        if self.config.guidance_embed:
            vec = vec + self.guidance_in(_per_sample(guidance, batch, x.device, "guidance"), dtype)
        img = self.img_in(x.to(dtype))
        txt = self.txt_in(text_states.to(dtype), t, text_mask)
        grid = self.grid(x.shape)
        rope = rope_freqs(grid, self.config.rope_dims, self.config.rope_theta, x.device,
                          riflex_index=self.rope_options.riflex_index)
        layout = TokenLayout.build(img.shape[1], text_mask)
        first = self._image_condition().first_tokens(self, grid, pooled, dtype)
        e = self.parallel.split(Embedded(img, txt, BlockContext(vec, rope, layout, self.attention), grid))
        return e if first is None else self._with_first_tokens(e, first, img.shape[1])

    def run_blocks(self, img, txt, ctx: BlockContext, start: int = 0, stop: int | None = None):
        """Run blocks [start, stop) of the double+single sequence; returns (img, txt)."""
        n_double = len(self.double_blocks)
        blocks = self.blocks
        stop = len(blocks) if stop is None else stop
        for i in range(start, min(stop, n_double)):
            img, txt = self._run(blocks[i], img, txt, ctx)
        if stop > n_double:
            n_img = img.shape[1]
            x = torch.cat([img, txt], dim=1)
            for i in range(max(start, n_double), stop):
                x = self._run(blocks[i], x, n_img, ctx)
            img, txt = x[:, :n_img], x[:, n_img:]
        return img, txt

    def modulated_image_input(self, e: Embedded) -> torch.Tensor:
        """Block 0's modulated image input (TeaCache's indicator), with block 0 placed for compute."""
        block = self.double_blocks[0]
        self.placement.enter(block)
        try:
            return block.modulated_image_input(e.img, e.ctx.image_vec)
        finally:
            self.placement.exit(block)

    def unembed(self, img: torch.Tensor, e: Embedded) -> torch.Tensor:
        return self.unpatchify(self.parallel.gather(self.final_layer(img, e.ctx.vec), e), e.grid)

    def _run(self, block, *args):
        self.placement.enter(block)
        try:
            return block(*args)
        finally:
            self.placement.exit(block)

    # -- image conditioning (token_replace) ------------------------------------------------
    def _image_condition(self) -> ImageCondition:
        condition = self.image_condition
        if not isinstance(condition, ImageCondition):
            raise InvalidInputError(
                f"model.image_condition: expected ImageCondition() (off) or TokenReplace() from "
                f"hyvideo_core.model, got {type(condition).__name__}.")
        return condition

    def _with_first_tokens(self, e: Embedded, first: FirstTokens, tokens: int) -> Embedded:
        """Give the blocks the leading tokens' vector, counted in this rank's image shard.

        The first `first.count` tokens of the whole sequence are a prefix, so on a rank that
        holds tokens [start, start + local) they are its first max(0, count - start) ones."""
        local = e.img.shape[1]
        count = max(0, min(local, first.count - self._shard_start(tokens, local)))
        if count == 0:          # this rank holds no frame-0 token: the plain modulation
            return e
        return replace(e, ctx=replace(e.ctx, first_tokens=replace(first, count=count)))

    def _shard_start(self, tokens: int, local: int) -> int:
        """Where this rank's image tokens start in the whole sequence. The parallel policy keeps
        consecutive shards of `local` tokens, and sequence-parallel rank s starts at s * local
        (parallel/policy.py `split`)."""
        groups = getattr(self.parallel, "groups", None)
        if groups is None:
            if local != tokens:
                raise InvalidInputError(
                    f"model.image_condition={type(self.image_condition).__name__}(): the parallel policy "
                    f"{type(self.parallel).__name__} split the {tokens} image tokens but does not say which ones "
                    "this rank holds (no `groups.sp_rank`); use hyvideo_core.parallel.ParallelPolicy or run "
                    "without image_condition.")
            return 0
        return groups.sp_rank * local

    # -- shapes ----------------------------------------------------------------------------
    def grid(self, shape) -> tuple[int, int, int]:
        pt, ph, pw = self.config.patch_size
        return shape[2] // pt, shape[3] // ph, shape[4] // pw

    def unpatchify(self, y: torch.Tensor, grid) -> torch.Tensor:
        """[B, N, C*pt*ph*pw] -> [B, C, T*pt, H*ph, W*pw]; feature index c*(pt*ph*pw)+o*ph*pw+p*pw+q."""
        t, h, w = grid
        pt, ph, pw = self.config.patch_size
        c = self.config.out_channels
        y = y.reshape(y.shape[0], t, h, w, c, pt, ph, pw)
        return y.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(y.shape[0], c, t * pt, h * ph, w * pw)

    def _check_inputs(self, x, text_states, text_mask, text_states_2, guidance) -> None:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_channels:
            carries = VARIANT_INPUTS.get(c.in_channels)
            hint = f" (variant {VARIANTS[c.in_channels]}: x carries {carries})" if carries else ""
            raise InvalidInputError(
                f"DiT input x: expected [B, {c.in_channels}, T, H, W], got {list(x.shape)}{hint}.")
        pt, ph, pw = c.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise InvalidInputError(
                f"DiT input x: latent T,H,W {list(x.shape[2:])} must be multiples of the patch {list(c.patch_size)}.")
        if text_states.ndim != 3 or text_states.shape[-1] != c.text_dim or text_states.shape[0] != x.shape[0]:
            raise InvalidInputError(
                f"text_states: expected [{x.shape[0]}, L, {c.text_dim}], got {list(text_states.shape)}; "
                "the text encoder does not match this model.")
        if text_states_2 is None or list(text_states_2.shape) != [x.shape[0], c.pooled_text_dim]:
            got = None if text_states_2 is None else list(text_states_2.shape)
            raise InvalidInputError(f"text_states_2 (pooled CLIP): expected [{x.shape[0]}, {c.pooled_text_dim}], got {got}.")
        if text_mask is not None:
            if tuple(text_mask.shape) != tuple(text_states.shape[:2]):
                raise InvalidInputError(
                    f"text_mask: expected shape {list(text_states.shape[:2])}, got {list(text_mask.shape)}.")
            if not bool(text_mask.bool().any(1).all()):
                raise InvalidInputError("text_mask: a sample has no valid text token; every prompt encodes to at least one.")
        if c.guidance_embed and guidance is None:
            raise InvalidInputError("guidance: this model embeds guidance; pass guidance scale x 1000 (e.g. 6000.0).")


def _per_sample(value, batch: int, device, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device).flatten()
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise InvalidInputError(f"{name}: expected 1 or {batch} values, got {t.numel()}.")
    return t


def _trim_padding(text_states, text_mask):
    """Drop trailing columns that are padding in every sample (exact: padding is never read)."""
    if text_mask is None:
        return text_states, None
    used = text_mask.bool().any(0).nonzero()
    keep = int(used.max()) + 1
    mask = text_mask[:, :keep]
    if bool(mask.bool().all()):
        mask = None
    return text_states[:, :keep], mask
