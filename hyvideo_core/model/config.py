"""DiT hyper-parameters: presets, the reference constructor's names, and inference from shapes."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import InvalidInputError


@dataclass(frozen=True)
class DiTConfig:
    hidden_size: int = 3072
    heads: int = 24
    mlp_ratio: float = 4.0
    double_blocks: int = 20
    single_blocks: int = 40
    refiner_blocks: int = 2
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096
    pooled_text_dim: int = 768
    rope_dims: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0
    guidance_embed: bool = True
    qkv_bias: bool = True
    timestep_freq_dim: int = 256
    variant: str = field(default="t2v", compare=False)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise InvalidInputError(
                f"DiT config: hidden_size {self.hidden_size} is not divisible by heads {self.heads}.")
        if sum(self.rope_dims) != self.head_dim:
            raise InvalidInputError(
                f"DiT config: rope_dims {list(self.rope_dims)} sum to {sum(self.rope_dims)}, but the "
                f"head dim is {self.head_dim}; they must be equal.")

    def replace(self, **changes) -> "DiTConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, DiTConfig] = {
    "hunyuan-video-13b": DiTConfig(),
    # The architecture of shared/golden/dit (637k parameters).
    "tiny": DiTConfig(hidden_size=64, heads=2, double_blocks=2, single_blocks=2, text_dim=64,
                      pooled_text_dim=32, rope_dims=(8, 12, 12)),
    # The medium config used by the benchmarks.
    "medium": DiTConfig(hidden_size=768, heads=6, double_blocks=4, single_blocks=8, text_dim=1024,
                        pooled_text_dim=256, rope_dims=(16, 56, 56)),
}


def from_reference_args(args: Mapping) -> DiTConfig:
    """Accept the official HYVideoDiffusionTransformer constructor names (golden config.json)."""
    nested = args.get("args", {}) or {}
    text_projection = args.get("text_projection", "single_refiner")
    if text_projection != "single_refiner":
        raise InvalidInputError(
            f"DiT config: text_projection={text_projection!r} is not supported; HunyuanVideo "
            "uses 'single_refiner'.")
    return DiTConfig(
        hidden_size=int(args.get("hidden_size", 3072)),
        heads=int(args.get("heads_num", 24)),
        mlp_ratio=float(args.get("mlp_width_ratio", 4.0)),
        double_blocks=int(args.get("mm_double_blocks_depth", 20)),
        single_blocks=int(args.get("mm_single_blocks_depth", 40)),
        refiner_blocks=int(args.get("token_refiner_depth", 2)),
        in_channels=int(args.get("in_channels", 16)),
        out_channels=int(args.get("out_channels", 16)),
        patch_size=_triple(args.get("patch_size", (1, 2, 2))),
        text_dim=int(nested.get("text_states_dim", args.get("text_states_dim", 4096))),
        pooled_text_dim=int(nested.get("text_states_dim_2", args.get("text_states_dim_2", 768))),
        rope_dims=tuple(args.get("rope_dim_list", (16, 56, 56))),
        rope_theta=float(args.get("rope_theta", 256.0)),
        guidance_embed=bool(args.get("guidance_embed", True)),
        qkv_bias=bool(args.get("qkv_bias", True)),
        timestep_freq_dim=int(args.get("timestep_frequency_embedding_size", 256)),
    )


def resolve(config: object) -> DiTConfig | None:
    """A preset name, a DiTConfig, a dict of our field names or the reference's names, or None."""
    if config is None or isinstance(config, DiTConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise InvalidInputError(
                f"config={config!r} is not a known preset; choose one of {sorted(PRESETS)}.")
        return PRESETS[config]
    if isinstance(config, Mapping):
        if "heads_num" in config or "mm_double_blocks_depth" in config or "args" in config:
            return from_reference_args(config)
        known = {f.name for f in dataclasses.fields(DiTConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise InvalidInputError(
                f"config: unknown field(s) {unknown}; known fields are {sorted(known)}.")
        values = dict(config)
        for name in ("patch_size", "rope_dims"):
            if name in values:
                values[name] = tuple(values[name])
        return DiTConfig(**values)
    raise InvalidInputError(f"config: expected a preset name, dict or DiTConfig, got {type(config).__name__}.")


def infer_from_shapes(shapes: Mapping[str, tuple[int, ...]], base: DiTConfig | None = None) -> DiTConfig:
    """Read the architecture from official-name tensor shapes; 13B defaults fill the rest."""
    base = base or PRESETS["hunyuan-video-13b"]
    embed = shapes["img_in.proj.weight"]  # [hidden, in_channels, pt, ph, pw]
    hidden = embed[0]
    heads = base.heads if hidden == base.hidden_size else max(1, hidden // 128)
    q_norm = shapes.get("double_blocks.0.img_attn_q_norm.weight")
    if q_norm is not None:
        heads = hidden // q_norm[0]
    head_dim = hidden // heads
    rope = base.rope_dims if sum(base.rope_dims) == head_dim else _default_rope_dims(head_dim)
    fc1 = shapes.get("double_blocks.0.img_mlp.fc1.weight") or shapes.get(
        "txt_in.individual_token_refiner.blocks.0.mlp.fc1.weight")
    in_ch = embed[1]
    return base.replace(
        hidden_size=hidden, heads=heads,
        mlp_ratio=fc1[0] / hidden if fc1 else base.mlp_ratio,
        double_blocks=_count(shapes, r"double_blocks\.(\d+)\."),
        single_blocks=_count(shapes, r"single_blocks\.(\d+)\."),
        refiner_blocks=_count(shapes, r"txt_in\.individual_token_refiner\.blocks\.(\d+)\."),
        in_channels=in_ch,
        out_channels=shapes["final_layer.linear.weight"][0] // (embed[2] * embed[3] * embed[4]),
        patch_size=tuple(embed[2:]),
        text_dim=shapes["txt_in.input_embedder.weight"][1],
        pooled_text_dim=shapes["vector_in.in_layer.weight"][1],
        rope_dims=rope,
        guidance_embed="guidance_in.mlp.0.weight" in shapes,
        qkv_bias="double_blocks.0.img_attn_qkv.bias" in shapes or not shapes.get("double_blocks.0.img_attn_qkv.weight"),
        timestep_freq_dim=shapes["time_in.mlp.0.weight"][1],
        variant=VARIANTS.get(in_ch, f"unknown ({in_ch} input channels)"),
    )


# Input channels of the patch embed tell the model variant (never the file name), SPEC_NEXT 2.1.
# - 16 "t2v": text-to-video. The current HunyuanVideo-I2V (token_replace) has the same shapes, so
#   it reads as "t2v" too; a run selects token_replace with model.image_condition = TokenReplace().
# - 32 "keyframe_or_skyreels": one architecture, two models that the shapes cannot tell apart.
#   It is T2V widened by the keyframe LoRA (model.widen / apply_loras), or SkyReels-V1-Hunyuan-I2V.
# - 33 "i2v_concat": HunyuanVideo-I2V's first release (latent_concat, no guidance_in).
VARIANTS = {16: "t2v", 32: "keyframe_or_skyreels", 33: "i2v_concat"}


def needs_image(config: "DiTConfig") -> bool:
    """True for the DiT that only makes videos from an image (i2v_concat, latent_concat)."""
    return VARIANTS.get(config.in_channels) == "i2v_concat"

# What `x` carries on the channel axis, for each widened variant (error messages, docs).
VARIANT_INPUTS = {
    32: "the noisy latent (16) then a 16-channel conditioning latent: the keyframe video's latent, or for "
        "SkyReels I2V the image latent in frame 0 and zeros after",
    33: "the noisy latent (16), the image latent (16: frame 0, zeros after) and a mask (1: ones on frame 0)",
}


def _default_rope_dims(head_dim: int) -> tuple[int, int, int]:
    # The official split gives time 1/8 of the head and height/width the rest, in even pairs.
    t = max(2, (head_dim // 8) // 2 * 2)
    hw = (head_dim - t) // 2 // 2 * 2
    return (head_dim - 2 * hw, hw, hw)


def _count(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> int:
    found = {int(m.group(1)) for k in shapes if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _triple(value) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (1, value, value)
    return tuple(int(v) for v in value)
