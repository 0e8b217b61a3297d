"""The LLaVA vision path of HunyuanVideo-I2V (SPEC_NEXT.md 2.6): CLIP ViT-L/14-336 patch features
of the penultimate layer (CLS dropped), through the 2-layer projector into the Llama's width.

The tower is a transformers CLIPVisionModel built with only the layers its selected hidden
state needs (like the Llama, see llm.py), so its `last_hidden_state` is that state. The image
is prepared as the reference does: transformers' CLIPImageProcessor (PIL backend) on the
original image, shortest side to the tower's size (bicubic), center crop, CLIP mean/std.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import InvalidInputError, MissingPackageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.BICUBIC
# LLaVA's vision_feature_layer / vision_feature_select_strategy of llava-llama-3-8b-v1_1.
DEFAULT_FEATURE_LAYER = -2
DEFAULT_SELECT_STRATEGY = "default"  # drop the CLS token ('full' keeps it)


class VisionModules(nn.Module):
    """The tower and the projector in one module, so one Placement moves both."""

    def __init__(self, tower: nn.Module, projector: nn.Module):
        super().__init__()
        self.tower = tower
        self.projector = projector


class VisionTower:
    def __init__(self, modules: VisionModules, processor, source: str = "<vision>",
                 select_strategy: str = DEFAULT_SELECT_STRATEGY, image_token_id: int | None = None):
        self.modules = modules.eval()
        self.processor = processor
        self.source = source
        self.select_strategy = select_strategy
        self.image_token_id = image_token_id  # from a LLaVA config.json; None for a single file

    @property
    def config(self):
        return self.modules.tower.config

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def patches(self) -> int:
        """Image tokens the Llama receives: 576 for ViT-L/14 at 336 px."""
        grid = (self.image_size // self.config.patch_size) ** 2
        return grid + (1 if self.select_strategy == "full" else 0)

    @property
    def hidden_size(self) -> int:
        return self.modules.projector.linear_2.out_features

    def pixel_values(self, images: Sequence) -> torch.Tensor:
        """PIL images -> [B, 3, S, S] float32, the reference's CLIPImageProcessor output."""
        out = self.processor(list(images), return_tensors="pt")["pixel_values"]
        out = torch.as_tensor(out, dtype=torch.float32)
        if tuple(out.shape[1:]) != (3, self.image_size, self.image_size):
            raise InvalidInputError(
                f"{self.source}: the image processor gives {list(out.shape[1:])} pixels, the vision "
                f"tower takes [3, {self.image_size}, {self.image_size}]; its preprocessor_config.json "
                "does not belong to this tower.")
        return out

    @torch.inference_mode()
    def encode(self, pixel_values: torch.Tensor, device) -> torch.Tensor:
        """[B, 3, S, S] -> [B, patches, llm hidden] projected image embeddings."""
        dtype = self.modules.projector.linear_1.weight.dtype
        out = self.modules.tower(pixel_values=pixel_values.to(device=device, dtype=dtype))
        features = out.last_hidden_state
        if self.select_strategy != "full":
            features = features[:, 1:]
        return self.modules.projector(features)


def keep_layers(total: int, feature_layer: int) -> int:
    """Encoder layers needed for hidden_states[feature_layer] (hidden_states[0] = embeddings)."""
    keep = feature_layer if feature_layer >= 0 else total + 1 + feature_layer
    if not 0 <= keep <= total:
        raise InvalidInputError(
            f"vision_feature_layer {feature_layer} is outside the tower's hidden states "
            f"(-{total + 1}..{total}).")
    return keep


def pil_processor_class():
    """transformers' CLIPImageProcessor on PIL (the reference's; transformers >= 5 names it
    CLIPImageProcessorPil, and its plain CLIPImageProcessor resizes with torchvision)."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingPackageError("The vision tower needs `transformers`: pip install transformers") from exc
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def clip_processor(image_size: int, folder=None):
    """The folder's preprocessor_config.json when it has one, else ViT-L/14-336's settings."""
    cls = pil_processor_class()
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return cls.from_pretrained(str(folder))
    return cls(do_resize=True, size={"shortest_edge": image_size}, resample=BICUBIC, do_center_crop=True,
               crop_size={"height": image_size, "width": image_size}, do_rescale=True,
               rescale_factor=1 / 255, do_normalize=True, image_mean=list(CLIP_MEAN),
               image_std=list(CLIP_STD), do_convert_rgb=True)


def as_pil(image, parameter: str = "image"):
    """A PIL image, or a float tensor [3, H, W] with values in 0..1 (made 8-bit, as an image
    file the reference reads is)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, torch.Tensor):
        raise InvalidInputError(
            f"{parameter}: expected a PIL image or a float tensor [3, H, W] in 0..1, got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 1:
        hint = (" (ComfyUI's IMAGE is [B, H, W, 3]: pass image[0].movedim(-1, 0))"
                if image.ndim in (3, 4) and image.shape[-1] == 3 else "")
        raise InvalidInputError(
            f"{parameter}: expected a tensor [3, H, W] (channels first, RGB), got shape "
            f"{list(image.shape)}{hint}.")
    if not image.is_floating_point():
        raise InvalidInputError(f"{parameter}: expected a float tensor with values in 0..1, got {image.dtype}.")
    data = image.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(data).all()):
        raise InvalidInputError(f"{parameter}: the image tensor holds NaN or infinite values.")
    low, high = float(data.min()), float(data.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise InvalidInputError(
            f"{parameter}: values must lie in 0..1, found {low:.3g}..{high:.3g} (a 0..255 or -1..1 "
            "image? divide by 255 or map x -> (x + 1) / 2).")
    pixels = (data.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(pixels, mode="RGB")


def black_like(image):
    """The reference's uncond image: black, the size of the conditioning image."""
    from PIL import Image
    return Image.new("RGB", image.size, (0, 0, 0))


def pixels_digest(pixel_values: torch.Tensor) -> str:
    """A cache key for one preprocessed image."""
    data = pixel_values.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha1(data.numpy().tobytes()).hexdigest()
