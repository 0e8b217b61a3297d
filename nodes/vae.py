"""VAE decode (LATENT -> IMAGE frames) and encode (IMAGE frames -> LATENT), tiled in space and time.

The VAE waits in RAM and visits the main device only while it works. LATENT holds raw VAE
latents and IMAGE is [frames, H, W, 3] in 0..1, ComfyUI's native conventions.
"""
from __future__ import annotations

from hyvideo_core.run import decode_latent, encode_video
from hyvideo_core.vae import TileSpec, images_to_video, trim_to_valid_frames, video_to_images

from .host import host

CATEGORY = "HunyuanVideo/vae"
DROP_FRAMES_KEY = "hyvideo_drop_frames"   # set by the sampler (nodes/sampling.py) for the v1 concat I2V model
SIZE_MULTIPLE = 16   # the DiT's 2x2 patches on latents of 1/8 size


def tile_progress():
    """A progress callback for the VAE: a bar per decode, updated (and interrupt-checked) per tile."""
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = host.progress(total)
        bar.update(done, total)
    return report


def tiling_for(tiling: str, spatial_tile: int, spatial_overlap: int, temporal_tile: int, temporal_overlap: int):
    """'auto' (sizes from the free memory, smaller on out-of-memory), 'off' (one pass) or the given tiles."""
    if tiling == "auto":
        return "auto"
    if tiling == "off":
        return None
    return TileSpec(spatial_tile or None, spatial_overlap if spatial_tile else 0,
                    temporal_tile or None, temporal_overlap if temporal_tile else 0)


class HyVideoVAEDecode:
    DESCRIPTION = ("Decodes a HunyuanVideo latent to frames, in overlapping tiles in space and time so long "
                   "videos fit; after an out-of-memory error it retries with smaller tiles by itself.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("HYVIDEO_VAE", {"tooltip": "From the HunyuanVideo VAE Loader."}),
            "samples": ("LATENT", {"tooltip": "Video latent from the sampler (or a native HunyuanVideo LATENT). When it "
                                              "says so (hyvideo_drop_frames, v1 concat image to video), the first "
                                              "decoded frames are dropped."}),
            "tiling": (["auto", "off", "custom"], {
                "default": "auto",
                "tooltip": "auto: tile sizes chosen from the free memory; off: one pass (exact, most memory); "
                           "custom: the tile sizes below."}),
            "spatial_tile": ("INT", {"default": 256, "min": 0, "max": 4096, "step": 8,
                                     "tooltip": "custom: tile edge in pixels (multiple of 8); 0 = no spatial tiles."}),
            "spatial_overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 8,
                                        "tooltip": "custom: overlap of spatial tiles in pixels (blended)."}),
            "temporal_tile": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 4,
                                      "tooltip": "custom: frames per temporal tile (multiple of 4); 0 = no "
                                                 "temporal tiles."}),
            "temporal_overlap": ("INT", {"default": 16, "min": 0, "max": 4096, "step": 4,
                                         "tooltip": "custom: overlap of temporal tiles in frames (blended)."}),
        }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The frames, [frames, height, width, 3] in 0..1.",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, vae, samples, tiling, spatial_tile, spatial_overlap, temporal_tile, temporal_overlap):
        tiles = tiling_for(tiling, spatial_tile, spatial_overlap, temporal_tile, temporal_overlap)
        host.check_interrupt()
        with host.interruptible():
            outcome = decode_latent(vae.vae, samples["samples"], tiles, main=vae.main, offload=vae.offload,
                                    progress=tile_progress(), host=host)
        video, notes = drop_leading_frames(outcome.video, samples.get(DROP_FRAMES_KEY, 0))
        images = video_to_images(video)
        del outcome.video, video
        text = f"{images.shape[0]} frames of {images.shape[2]}x{images.shape[1]}, {outcome.description}"
        return {"ui": {"text": [text, *notes]}, "result": (images,)}


def drop_leading_frames(video, drop):
    """[B, 3, F, H, W] without its first `drop` frames (the sampler's LATENT says how many: the v1 concat
    I2V model's reference drops 4); (video, notes)."""
    drop = int(drop or 0)
    if drop <= 0:
        return video, []
    if drop >= video.shape[2]:
        return video, [f"{DROP_FRAMES_KEY}={drop}, but only {video.shape[2]} frames were decoded: none dropped"]
    return video[:, :, drop:], [f"dropped the first {drop} decoded frames ({DROP_FRAMES_KEY}, as the reference does "
                                "for the v1 concat image-to-video model)"]


class HyVideoVAEEncode:
    DESCRIPTION = ("Encodes frames to a HunyuanVideo latent (for video-to-video). Frames are trimmed to 4k+1 and "
                   "centre-cropped to multiples of 16; both are reported.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("HYVIDEO_VAE", {"tooltip": "From the HunyuanVideo VAE Loader (with its encoder)."}),
            "images": ("IMAGE", {"tooltip": "The frames to encode, [frames, height, width, 3]."}),
            "tiling": (["auto", "off"], {"default": "auto",
                                         "tooltip": "auto: tiles chosen from the free memory; off: one pass."}),
        }}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("The video latent (raw VAE latents), e.g. for the sampler's samples input.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, vae, images, tiling):
        notes = []
        frames = trim_to_valid_frames(images, dim=0)
        if frames.shape[0] != images.shape[0]:
            notes.append(f"{images.shape[0]} frames trimmed to {frames.shape[0]} (the VAE encodes 4k+1 frames)")
        frames, cropped = crop_to_multiple(frames, SIZE_MULTIPLE)
        if cropped:
            notes.append(cropped)
        host.check_interrupt()
        with host.interruptible():
            latent = encode_video(vae.vae, images_to_video(frames, dtype=vae.dtype),
                                  "auto" if tiling == "auto" else None, main=vae.main, offload=vae.offload, host=host)
        notes.insert(0, f"{frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} -> latent {list(latent.shape)}")
        return {"ui": {"text": notes}, "result": ({"samples": latent},)}


def crop_to_multiple(images, multiple: int):
    """Centre crop [F, H, W, C] so H and W are multiples of `multiple`; (images, note or '')."""
    height, width = images.shape[1:3]
    new_h, new_w = height // multiple * multiple, width // multiple * multiple
    if (new_h, new_w) == (height, width):
        return images, ""
    if not new_h or not new_w:
        from hyvideo_core.errors import InvalidInputError
        raise InvalidInputError(f"images: {width}x{height} is smaller than {multiple} pixels; nothing to encode.")
    top, left = (height - new_h) // 2, (width - new_w) // 2
    note = f"frames {width}x{height} centre-cropped to {new_w}x{new_h} (multiples of {multiple})"
    return images[:, top:top + new_h, left:left + new_w], note


NODE_CLASS_MAPPINGS = {"HyVideoVAEDecode": HyVideoVAEDecode, "HyVideoVAEEncode": HyVideoVAEEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoVAEDecode": "HunyuanVideo VAE Decode", "HyVideoVAEEncode": "HunyuanVideo VAE Encode"}
