"""VAE hyper-parameters: the 884-16c preset, the reference / diffusers constructor names, and
inference from a checkpoint's tensor shapes."""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Mapping

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

SCALING_FACTOR = 0.476986


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    spatial_compression: int = 8
    temporal_compression: int = 4
    mid_attention: bool = True
    scaling_factor: float = SCALING_FACTOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if self.temporal_compression != 4:
            raise InvalidInputError(
                f"VAE config: temporal_compression={self.temporal_compression}; the causal 3D VAE "
                "only exists with 4 (frames 4k+1 <-> latent frames k+1).")
        n_spatial = _log2_exact(self.spatial_compression, "spatial_compression")
        if len(self.block_out_channels) < n_spatial + 1:
            raise InvalidInputError(
                f"VAE config: {len(self.block_out_channels)} blocks cannot compress space by "
                f"{self.spatial_compression}; need at least {n_spatial + 1} entries in block_out_channels.")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise InvalidInputError(
                f"VAE config: channels {bad} are not divisible by norm_num_groups={self.norm_num_groups}.")

    # Which blocks change resolution: the reference's rule, given 4x time compression.
    def resample_factors(self) -> list[tuple[int, int, int] | None]:
        """(t, h, w) factor of encoder down block i / decoder up block i, or None if it keeps size."""
        n = len(self.block_out_channels)
        n_spatial = _log2_exact(self.spatial_compression, "spatial_compression")
        n_time = _log2_exact(self.temporal_compression, "temporal_compression")
        factors: list[tuple[int, int, int] | None] = []
        for i in range(n):
            final = i == n - 1
            space = i < n_spatial
            time = i >= n - 1 - n_time and not final
            factors.append((2 if time else 1, 2 if space else 1, 2 if space else 1) if (space or time) else None)
        return factors

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.temporal_compression + 1

    def sample_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal_compression + 1

    def replace(self, **changes) -> "VAEConfig":
        return dataclasses.replace(self, **changes)


def _log2_exact(value: int, name: str) -> int:
    n = int(round(math.log2(value))) if value > 0 else -1
    if n < 0 or 2 ** n != value:
        raise InvalidInputError(f"VAE config: {name}={value} must be a power of two.")
    return n


PRESETS: dict[str, VAEConfig] = {
    "884-16c-hy": VAEConfig(),
    # The architecture of shared/golden/vae (252k parameters).
    "tiny": VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4),
}

_REFERENCE_BLOCKS = {"DownEncoderBlockCausal3D", "UpDecoderBlockCausal3D",
                     "HunyuanVideoDownBlock3D", "HunyuanVideoUpBlock3D"}
# Constructor arguments that do not change the network (tiling defaults, bookkeeping).
_NOT_ARCHITECTURE = {"class", "_class_name", "_diffusers_version", "_name_or_path", "dtype", "init",
                     "num_parameters", "force_upcast", "sample_size", "sample_tsize", "act_fn",
                     "down_block_types", "up_block_types", "shift_factor"}

_NAMES = {  # reference / diffusers name -> our field
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "latent_channels": "latent_channels",
    "block_out_channels": "block_out_channels",
    "layers_per_block": "layers_per_block",
    "norm_num_groups": "norm_num_groups",
    "spatial_compression_ratio": "spatial_compression",
    "time_compression_ratio": "temporal_compression",
    "temporal_compression_ratio": "temporal_compression",
    "mid_block_add_attention": "mid_attention",
    "scaling_factor": "scaling_factor",
}


def config_from_dict(args: Mapping) -> VAEConfig:
    """Accept the reference AutoencoderKLCausal3D arguments (golden config.json), a diffusers
    AutoencoderKLHunyuanVideo config.json, or our own field names."""
    fields = {f.name for f in dataclasses.fields(VAEConfig)}
    values: dict = {}
    unknown = []
    for key, value in args.items():
        if key in _NAMES:
            values[_NAMES[key]] = value
        elif key in fields:
            values[key] = value
        elif key not in _NOT_ARCHITECTURE:
            unknown.append(key)
    act = args.get("act_fn", "silu")
    if act not in ("silu", "swish"):
        raise InvalidInputError(f"VAE config: act_fn={act!r}; HunyuanVideo's VAE uses 'silu'.")
    for key in ("down_block_types", "up_block_types"):
        odd = sorted(set(args.get(key, ())) - _REFERENCE_BLOCKS)
        if odd:
            raise InvalidInputError(
                f"VAE config: {key} contains {odd}; this is not the HunyuanVideo causal 3D VAE "
                f"(expected {sorted(_REFERENCE_BLOCKS)}).")
    if args.get("shift_factor") not in (None, 0, 0.0):
        raise InvalidInputError(
            f"VAE config: shift_factor={args['shift_factor']}; HunyuanVideo's VAE has none.")
    if unknown:
        log.warning("VAE config: ignored keys that do not describe this VAE: %s", sorted(unknown))
    return VAEConfig(**values)


def resolve_config(config: object) -> VAEConfig | None:
    """None, a VAEConfig, a preset name, or a constructor-arguments dict -> VAEConfig / None."""
    if config is None or isinstance(config, VAEConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise InvalidInputError(
                f"VAE config: unknown preset {config!r}; known presets: {sorted(PRESETS)}.")
        return PRESETS[config]
    if isinstance(config, Mapping):
        return config_from_dict(config)
    raise InvalidInputError(
        f"VAE config: expected a VAEConfig, preset name or dict, got {type(config).__name__}.")


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """Architecture from tensor shapes (official key names). GroupNorm's group count is not stored
    in weights: the preset's 32 is used when it divides every width, else it is guessed and said."""
    side = "encoder.down_blocks" if any(k.startswith("encoder.") for k in shapes) else "decoder.up_blocks"
    blocks = sorted({int(k.split(".")[2]) for k in shapes if k.startswith(side + ".")})
    if not blocks:
        raise InvalidInputError("VAE weights hold neither encoder.down_blocks nor decoder.up_blocks.")
    widths = [shapes[f"{side}.{i}.resnets.0.conv2.conv.weight"][0] for i in blocks]
    resnets = {int(k.split(".")[4]) for k in shapes if k.startswith(f"{side}.0.resnets.")}
    layers = len(resnets) if side.startswith("encoder") else len(resnets) - 1
    if side.startswith("decoder"):
        widths = widths[::-1]
    latent = shapes["post_quant_conv.weight"][0] if "post_quant_conv.weight" in shapes else \
        shapes["decoder.conv_in.conv.weight"][1]
    in_ch = shapes.get("encoder.conv_in.conv.weight", (0, 3))[1]
    out_ch = shapes["decoder.conv_out.conv.weight"][0] if "decoder.conv_out.conv.weight" in shapes else 3
    attention = any(".mid_block.attentions.0." in k for k in shapes)
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if all(w % g == 0 for w in widths))
    config = VAEConfig(in_channels=in_ch, out_channels=out_ch, latent_channels=latent,
                       block_out_channels=tuple(widths), layers_per_block=layers,
                       norm_num_groups=groups, mid_attention=attention)
    if config == PRESETS["884-16c-hy"]:
        return config
    log.warning(
        "VAE weights do not match the 884-16c-hy preset (widths %s, %d layers per block); the "
        "architecture was read from the tensor shapes and norm_num_groups=%d was assumed (it is not "
        "stored in weights). Pass config= (e.g. the model's config.json) if that is wrong.",
        list(widths), layers, groups)
    return config
